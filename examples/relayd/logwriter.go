package main

import (
	"io"
	"sync"
	"time"
)

// maxPendingLog is how many bytes of log lines may wait for the writer
// goroutine; past it, Write waits for them to be written, as a plain
// writer would.
const maxPendingLog = 1 << 20

// logGather is how long the writer goroutine waits, once woken by a line,
// for more lines to write with it: one wake-up and one write system call
// per moment rather than per line (a busy relay logs a line per turn).
// A line reaches w at most this much later; a process killed outright
// loses at most this much of its log.
const logGather = 2 * time.Millisecond

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
	closed  bool
	werr    error // the last write error, kept for Close
}

func newLogWriter(w io.Writer) *logWriter {
	l := &logWriter{w: w, wake: make(chan struct{}, 1), done: make(chan struct{})}
	l.drained = sync.NewCond(&l.mu)
	go l.run()
	return l
}

// Write queues a copy of p. It does not report the underlying writer's
// errors: a log line has nobody to tell.
func (l *logWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	for len(l.pending) >= maxPendingLog && !l.closed {
		l.drained.Wait()
	}
	if l.closed {
		l.mu.Unlock()
		<-l.done // what was pending is out: this line comes after it
		return l.w.Write(p)
	}
	l.pending = append(l.pending, p...)
	select { // under mu: Close closes wake under mu too
	case l.wake <- struct{}{}:
	default: // a wake-up is pending; it takes this line too
	}
	l.mu.Unlock()
	return len(p), nil
}

func (l *logWriter) run() {
	defer close(l.done)
	var out []byte
	for range l.wake {
		time.Sleep(logGather) // a timer, not synchronization: lines gather meanwhile
		l.mu.Lock()
		out, l.pending = l.pending, out[:0]
		l.mu.Unlock()
		if len(out) > 0 {
			if _, err := l.w.Write(out); err != nil {
				l.mu.Lock()
				l.werr = err
				l.mu.Unlock()
			}
		}
		if cap(out) > maxPendingLog {
			out = nil // a burst's buffer is not kept
		}
		l.mu.Lock()
		l.drained.Broadcast()
		l.mu.Unlock()
	}
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
