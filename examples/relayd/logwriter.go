package main

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"time"
)

// maxPendingLog is how many bytes of log lines may wait for the writer
// goroutine; past it, Write waits for them to be written, as a plain
// writer would.
const maxPendingLog = 1 << 20

// logGather is how long the writer goroutine waits, once woken by a line,
// for more lines to write with it: one wake-up and one write system call
// per moment rather than per line (a busy relay logs a line per turn:
// at 2 ms, a relay serving one client at a time still woke and wrote for
// about every line, and paid for it in its turns' latency). A line
// reaches w at most this much later; a process killed outright loses at
// most this much of its log.
const logGather = 50 * time.Millisecond

// logWriter hands log lines to a goroutine that writes them to w, so that
// a turn's log line costs its formatting and a copy, not a write system
// call on the request's path before its response ends (an access line is
// logged after the relay's handler returns, and net/http ends the
// response only after the whole handler chain has). Lines keep their
// order; the lines of logGather go out together. Close writes what is
// pending and stops the goroutine; after Close, Write writes to w
// directly.
type logWriter struct {
	w    io.Writer
	wake chan struct{} // buffered: one pending wake-up is enough
	done chan struct{} // closed when the goroutine has stopped

	mu      sync.Mutex
	drained *sync.Cond // signalled after each write: pending shrank
	pending []byte
	// records are lines still to be formatted (deferredHandler), each to
	// go where pending had reached when it was logged.
	records []deferredRecord
	closed  bool
	werr    error // the last write error, kept for Close

	// sink is what deferred records are formatted into: the goroutine's
	// buffer, or after Close a caller's under fmtMu.
	sink  appendBuffer
	fmtMu sync.Mutex
}

// deferredRecord is a log record to be formatted by h at byte at of the
// pending lines.
type deferredRecord struct {
	h  slog.Handler
	r  slog.Record
	at int
}

// recordBytes is what a deferred record counts for against maxPendingLog
// before it is formatted: about an access line.
const recordBytes = 256

// appendBuffer is an io.Writer that appends to b.
type appendBuffer struct{ b []byte }

func (a *appendBuffer) Write(p []byte) (int, error) {
	a.b = append(a.b, p...)
	return len(p), nil
}

// waiting is how much waits to be written, under mu.
func (l *logWriter) waiting() int { return len(l.pending) + recordBytes*len(l.records) }

func newLogWriter(w io.Writer) *logWriter {
	l := &logWriter{w: w, wake: make(chan struct{}, 1), done: make(chan struct{})}
	l.drained = sync.NewCond(&l.mu)
	go l.run()
	return l
}

// Write queues a copy of p. It does not report the underlying writer's
// errors: a log line has nobody to tell.
func (l *logWriter) Write(p []byte) (int, error) {
	if !l.lockRoom() {
		<-l.done // what was pending is out: this line comes after it
		return l.w.Write(p)
	}
	l.pending = append(l.pending, p...)
	l.wakeLocked()
	l.mu.Unlock()
	return len(p), nil
}

// lockRoom takes mu once there is room for a line; false (mu released)
// when the writer is closed.
func (l *logWriter) lockRoom() bool {
	l.mu.Lock()
	for l.waiting() >= maxPendingLog && !l.closed {
		l.drained.Wait()
	}
	if l.closed {
		l.mu.Unlock()
		return false
	}
	return true
}

// wakeLocked wakes the goroutine, under mu: Close closes wake under mu
// too.
func (l *logWriter) wakeLocked() {
	select {
	case l.wake <- struct{}{}:
	default: // a wake-up is pending; it takes this line too
	}
}

// deferredHandler returns a handler whose records are formatted as
// slog.NewTextHandler(w, opts) would, by the writer's goroutine: a
// request's access line then costs the request a copy of its record, not
// its formatting, before net/http reads the connection's next request.
// Its records must hold values that do not change after they are logged
// (strings, numbers): they are read later, on another goroutine.
func (l *logWriter) deferredHandler(opts *slog.HandlerOptions) slog.Handler {
	return deferredHandler{l: l, h: slog.NewTextHandler(&l.sink, opts)}
}

type deferredHandler struct {
	l *logWriter
	h slog.Handler // formats into l.sink
}

func (d deferredHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return d.h.Enabled(ctx, level)
}

func (d deferredHandler) Handle(_ context.Context, r slog.Record) error {
	l := d.l
	if !l.lockRoom() {
		<-l.done
		l.fmtMu.Lock()
		defer l.fmtMu.Unlock()
		l.sink.b = l.sink.b[:0]
		d.h.Handle(context.Background(), r)
		_, err := l.w.Write(l.sink.b)
		return err
	}
	l.records = append(l.records, deferredRecord{h: d.h, r: r.Clone(), at: len(l.pending)})
	l.wakeLocked()
	l.mu.Unlock()
	return nil
}

func (d deferredHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return deferredHandler{l: d.l, h: d.h.WithAttrs(as)}
}

func (d deferredHandler) WithGroup(name string) slog.Handler {
	return deferredHandler{l: d.l, h: d.h.WithGroup(name)}
}

func (l *logWriter) run() {
	defer close(l.done)
	var lines, formatted []byte
	var recs []deferredRecord
	for range l.wake {
		time.Sleep(logGather) // a timer, not synchronization: lines gather meanwhile
		l.mu.Lock()
		lines, l.pending = l.pending, lines[:0]
		recs, l.records = l.records, recs[:0]
		l.mu.Unlock()
		out := lines
		if len(recs) > 0 {
			formatted = l.interleave(formatted[:0], lines, recs)
			out = formatted
			clear(recs) // the records' values are not kept
		}
		if len(out) > 0 {
			if _, err := l.w.Write(out); err != nil {
				l.mu.Lock()
				l.werr = err
				l.mu.Unlock()
			}
		}
		if cap(lines) > maxPendingLog || cap(formatted) > maxPendingLog {
			lines, formatted = nil, nil // a burst's buffers are not kept
		}
		l.mu.Lock()
		l.drained.Broadcast()
		l.mu.Unlock()
	}
}

// interleave appends lines to out with each record formatted where it
// was logged.
func (l *logWriter) interleave(out, lines []byte, recs []deferredRecord) []byte {
	if len(recs) == 0 {
		return append(out, lines...)
	}
	prev := 0
	for _, rec := range recs {
		out = append(out, lines[prev:rec.at]...)
		prev = rec.at
		l.sink.b = out
		rec.h.Handle(context.Background(), rec.r)
		out = l.sink.b
	}
	l.sink.b = nil
	return append(out, lines[prev:]...)
}

// Close writes the pending lines, stops the goroutine and returns the
// last write error. It may be called more than once.
func (l *logWriter) Close() error {
	l.mu.Lock()
	if !l.closed {
		l.closed = true
		// Every line queued so far sent a wake-up or found one pending:
		// the goroutine writes them all before it sees the close.
		close(l.wake)
		l.drained.Broadcast() // writers waiting for room write directly
	}
	l.mu.Unlock()
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.werr
}
