package relay

import (
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/relaykit/responsesrelay/internal/headers"
	"github.com/relaykit/responsesrelay/internal/pump"
	"github.com/relaykit/responsesrelay/internal/sse"
)

var errClientWrite = errors.New("relay: client write failed")

// sseWriter is the client end of a streaming turn. Send and Ping may be
// called from different goroutines (the pump and its keepalive timer).
type sseWriter struct {
	mu        sync.Mutex
	w         http.ResponseWriter
	rc        *http.ResponseController
	rcv       http.ResponseController // rc points here: one allocation less
	committed bool
	dead      bool // the client is gone or the handler returned
	upstream  http.Header
	extra     []string
	deadline  writeDeadline
	// noFlush is set once the writer turned out unable to flush (a
	// middleware's wrapper without Flush or Unwrap): events are still
	// written and go out as the server's buffer fills, as ReverseProxy
	// does, rather than the stream being cut as if the client had left.
	noFlush   bool
	onNoFlush func() // called once when noFlush is set; may be nil
	// headerOut: net/http has written the header (the first flush);
	// beforeHeader counts the bytes written before it.
	headerOut    bool
	beforeHeader int
	// frame gathers the events written since the last flush, from
	// frameBufs, and is given back at the flush: a burst of events goes
	// to net/http in one Write, one chunk, as ReverseProxy writes what
	// one read brought (one Write per event cost a copy through
	// net/http's 2 KiB buffer, a chunk header each 2 KiB and a write
	// call each 4 KiB).
	frame *[]byte
}

// maxGathered bounds the events gathered without a flush: past it they
// go to net/http at once, still unflushed.
const maxGathered = 32 << 10

func newSSEWriter(w http.ResponseWriter, extra []string, writeTimeout time.Duration, onNoFlush func()) *sseWriter {
	s := &sseWriter{w: w, rcv: *http.NewResponseController(w), extra: extra, onNoFlush: onNoFlush}
	s.rc = &s.rcv
	s.deadline = writeDeadline{rc: s.rc, timeout: writeTimeout}
	return s
}

// frameBufs hold the framed events of a burst until its flush: shared, so
// an open stream keeps no buffer of its own while it waits.
var frameBufs = sync.Pool{New: func() any { b := make([]byte, 0, 2<<10); return &b }}

func putFrameBuf(b *[]byte) {
	if cap(*b) <= 64<<10 {
		frameBufs.Put(b)
	}
}

// writeDeadline keeps a write deadline of about timeout ahead of every
// write that can reach the client, so that a client that stops reading
// cannot block a turn forever. It moves the deadline only every
// timeout/4, and asks the clock (monotonic only: time.Since, not
// time.Now) before each flush and once per deadlineBytes of events
// written without one: such writes go to the server's buffer, and reach
// the network only when it fills.
type writeDeadline struct {
	rc        *http.ResponseController
	timeout   time.Duration
	moved     time.Time // when the deadline was last moved
	set       bool
	unchecked int // bytes written since the clock was asked
}

// deadlineBytes is how much is written without a flush between two looks
// at the clock: the size of net/http's response buffer.
const deadlineBytes = 2 << 10

// buffered accounts for n bytes about to be written without a flush.
func (d *writeDeadline) buffered(n int) {
	if d.unchecked += n; d.set && d.unchecked < deadlineBytes {
		return
	}
	d.extend()
}

// extend moves the deadline when it is due.
func (d *writeDeadline) extend() {
	d.unchecked = 0
	if d.timeout <= 0 || d.set && time.Since(d.moved) < d.timeout/4 {
		return
	}
	now := time.Now()
	if d.rc.SetWriteDeadline(now.Add(d.timeout)) != nil {
		d.timeout = 0 // not supported by this writer: stop trying
		return
	}
	d.set = true
	d.moved = now
}

// clear removes the deadline when the answer is done: the connection may
// serve the host's other routes next, and net/http only resets a write
// deadline when http.Server.WriteTimeout is set.
func (d *writeDeadline) clear() {
	if d.set {
		d.rc.SetWriteDeadline(time.Time{})
		d.set = false
	}
}

// setUpstreamHeader names the upstream answer whose allowed headers go to
// the client when the stream commits (unless pings committed it earlier).
func (s *sseWriter) setUpstreamHeader(h http.Header) {
	s.mu.Lock()
	s.upstream = h
	s.mu.Unlock()
}

func (s *sseWriter) isCommitted() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.committed
}

func (s *sseWriter) commitLocked() {
	if s.committed {
		return
	}
	s.committed = true
	h := s.w.Header()
	if s.upstream != nil {
		headers.Return(h, s.upstream, s.extra)
	}
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	h.Del("Content-Length")
	s.w.WriteHeader(http.StatusOK)
}

// writeGatheredLocked hands the gathered events to net/http, without a
// flush.
func (s *sseWriter) writeGatheredLocked() error {
	if s.frame == nil || len(*s.frame) == 0 {
		return nil
	}
	b := *s.frame
	*s.frame = b[:0]
	s.deadline.buffered(len(b))
	if !s.headerOut {
		if s.beforeHeader += len(b); s.beforeHeader >= headerBufferBytes {
			// This write would have net/http write the header.
			return s.headerOutLocked(b)
		}
	}
	if _, err := s.w.Write(b); err != nil {
		s.dead = true
		return err
	}
	return nil
}

// headerBufferBytes is the size of the buffer net/http keeps a response's
// first bytes in: it writes the header when the buffer fills or flushes.
const headerBufferBytes = 2 << 10

// headerOutLocked writes b and flushes (b may be nil) on a goroutine of
// its own, the first flush of the stream: net/http writes the header
// then, in a 2.8 KiB frame (3.9 KiB with what it calls), which from the
// depth the pump writes at would double the handler's stack to 16 KiB
// for the rest of a stream that may wait silent for minutes
// (onFreshStack; BENCHMARKS.md, "Memory per open stream").
func (s *sseWriter) headerOutLocked(b []byte) error {
	var werr, ferr error
	onFreshStack(func() {
		if len(b) > 0 {
			if _, werr = s.w.Write(b); werr != nil {
				return
			}
		}
		ferr = s.rc.Flush()
	})
	s.headerOut = werr == nil && ferr == nil
	switch {
	case werr != nil:
		s.dead = true
		return werr
	case ferr != nil && errors.Is(ferr, http.ErrNotSupported):
		s.noFlushLocked()
		s.headerOut = true // no flush to wait for: writes go as they fill
	case ferr != nil:
		s.dead = true
		return ferr
	}
	return nil
}

// flushLocked writes the gathered events and flushes them.
func (s *sseWriter) flushLocked() error {
	if s.dead {
		s.dropFrame()
		return errClientWrite
	}
	headerOut := s.headerOut
	err := s.writeGatheredLocked()
	s.dropFrame()
	if err != nil || s.noFlush {
		return err
	}
	if s.headerOut != headerOut {
		return nil // the header went out with the events, flushed
	}
	s.deadline.extend()
	if !s.headerOut {
		return s.headerOutLocked(nil)
	}
	if err := s.rc.Flush(); err != nil {
		if errors.Is(err, http.ErrNotSupported) {
			s.noFlushLocked()
			return nil
		}
		s.dead = true
		return err
	}
	return nil
}

// noFlushLocked records that the writer cannot flush.
func (s *sseWriter) noFlushLocked() {
	s.noFlush = true
	if s.onNoFlush != nil {
		s.onNoFlush()
	}
}

// SendBuffered writes one event without flushing: the pump flushes once
// the upstream has no further event ready.
func (s *sseWriter) SendBuffered(typ string, data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.gatherLocked(); err != nil {
		return err
	}
	*s.frame = sse.AppendEvent(*s.frame, typ, data)
	if len(*s.frame) >= maxGathered {
		return s.writeGatheredLocked()
	}
	return nil
}

// Flush sends what SendBuffered wrote.
func (s *sseWriter) Flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.flushLocked()
}

// Send writes one event and flushes it (with the events gathered before).
func (s *sseWriter) Send(typ string, data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.gatherLocked(); err != nil {
		return err
	}
	*s.frame = sse.AppendEvent(*s.frame, typ, data)
	return s.flushLocked()
}

// gatherLocked readies s.frame for what is written next; the first write
// commits the answer's header (net/http writes it with the first flush).
func (s *sseWriter) gatherLocked() error {
	if s.dead {
		return errClientWrite
	}
	s.commitLocked()
	if s.frame == nil {
		s.frame = frameBufs.Get().(*[]byte)
	}
	return nil
}

func (s *sseWriter) dropFrame() {
	if s.frame != nil {
		putFrameBuf(s.frame)
		s.frame = nil
	}
}

// Ping writes a keepalive comment.
func (s *sseWriter) Ping() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.gatherLocked(); err != nil {
		return err
	}
	*s.frame = append(*s.frame, sse.Ping...)
	return s.flushLocked()
}

// eventSink is the client end of a streaming turn.
type eventSink interface {
	pump.Sink
	// fail answers an error that ended the turn without a terminal event.
	fail(e *APIError)
	// setUpstreamHeader names the upstream answer whose allowed headers
	// go to the client, where the transport has headers.
	setUpstreamHeader(h http.Header)
}

// fail answers e: a JSON error while nothing was written, else an "error"
// event on the committed stream.
func (s *sseWriter) fail(e *APIError) {
	if !s.isCommitted() {
		writeJSONError(s.w, e)
		return
	}
	s.Send("error", e.eventJSON())
}

// close stops all later writes; a timer that fires after the handler
// returned must not touch the ResponseWriter.
func (s *sseWriter) close() {
	s.mu.Lock()
	s.dead = true
	s.deadline.clear()
	s.dropFrame()
	s.mu.Unlock()
}
