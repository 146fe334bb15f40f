package pump

import "errors"

// Bounds on the bootstrap events held while the relay may still fail over.
// A real upstream sends two or three of them (created, in_progress, and
// queued for a background response); each echoes the response object,
// whose instructions and tools come from the request. An upstream that
// keeps repeating them would otherwise grow the held buffer without end,
// and the idle timeout never fires while events keep coming.
const (
	DefaultMaxHeldEvents = 8
	DefaultMaxHeldBytes  = 1 << 20
)

// ErrTooManyHeld is Result.Err when the upstream sent more bootstrap events
// (by count or bytes) than may be held before any output: a broken
// attempt, refused like a stream that ended before output.
var ErrTooManyHeld = errors.New("upstream sent too many events before any output")

// hold keeps one bootstrap event back, or reports false when it would
// exceed the bounds (nothing is then kept).
func (p *Runner) hold(typ string, data []byte) bool {
	maxEvents, maxBytes := p.o.MaxHeldEvents, p.o.MaxHeldBytes
	if maxEvents <= 0 {
		maxEvents = DefaultMaxHeldEvents
	}
	if maxBytes <= 0 {
		maxBytes = DefaultMaxHeldBytes
	}
	if len(p.heldEnds) >= maxEvents || len(p.heldBuf)+len(data) > maxBytes {
		return false
	}
	if p.heldTypes == nil {
		p.heldEnds, p.heldTypes = p.endsArr[:0], p.typesArr[:0]
	}
	p.heldBuf = append(p.heldBuf, data...)
	p.heldEnds = append(p.heldEnds, len(p.heldBuf))
	p.heldTypes = append(p.heldTypes, typ)
	return true
}

func (p *Runner) flushHeld() {
	start := 0
	for i, end := range p.heldEnds {
		// The event that released them follows at once and decides the
		// flush.
		p.write(p.heldTypes[i], p.heldBuf[start:end], p.batch != nil)
		start = end
	}
	p.heldBuf, p.heldEnds, p.heldTypes = nil, nil, nil
}
