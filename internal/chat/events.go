package chat

import (
	"strconv"

	"github.com/relaykit/responsesrelay/internal/event"
)

// Events is a reusable batch of Responses events, each a complete JSON
// object with "type" and "sequence_number". A caller keeps one per stream
// and calls Reset before each Push, so that translating a chunk allocates
// nothing once the buffers have grown. The zero value is ready to use.
type Events struct {
	buf   []byte
	ends  []int
	infos []event.Info
	seq   int64 // of the event begun
}

// Reset empties the batch, keeping its memory. Slices returned by At are
// overwritten afterwards.
func (e *Events) Reset() {
	e.buf = e.buf[:0]
	e.ends = e.ends[:0]
	e.infos = e.infos[:0]
}

// Len is the number of events in the batch.
func (e *Events) Len() int { return len(e.ends) }

// At is the JSON of event i, valid until the next Reset.
func (e *Events) At(i int) []byte {
	start := 0
	if i > 0 {
		start = e.ends[i-1]
	}
	return e.buf[start:e.ends[i]:e.ends[i]]
}

// Type is the "type" of event i (a constant string), for an SSE event: line.
func (e *Events) Type(i int) string { return e.infos[i].Type }

// Info is the classification of event i, as event.Classify would give it.
func (e *Events) Info(i int) event.Info { return e.infos[i] }

// begin starts an event; finish ends it.
func (e *Events) begin(typ string, seq int64) []byte {
	e.seq = seq
	b := append(e.buf, `{"type":"`...)
	b = append(b, typ...)
	b = append(b, `","sequence_number":`...)
	return strconv.AppendInt(b, seq, 10)
}

func (e *Events) finish(b []byte, typ string) {
	e.buf = append(b, '}')
	e.ends = append(e.ends, len(e.buf))
	e.infos = append(e.infos, event.Info{Kind: kindOf(typ), Type: typ, Seq: e.seq})
}

// kindOf is the kind of an event type the translation writes.
func kindOf(typ string) event.Kind {
	switch typ {
	case typeCreated, typeInProgress:
		return event.KindBootstrap
	case typeCompleted, typeIncomplete, typeFailed:
		return event.KindTerminal
	}
	return event.KindOutput
}
