package main

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
)

// gatedWriter blocks every Write until open is closed, and keeps what it
// was given.
type gatedWriter struct {
	open    chan struct{}
	entered chan struct{} // gets one value per Write that started
	mu      sync.Mutex
	buf     bytes.Buffer
	err     error
}

func (g *gatedWriter) Write(p []byte) (int, error) {
	g.entered <- struct{}{}
	<-g.open
	g.mu.Lock()
	defer g.mu.Unlock()
	g.buf.Write(p)
	return len(p), g.err
}

// Lines from several goroutines come out whole, each goroutine's in its
// order; while the underlying writer is stuck, at most maxPendingLog
// bytes (and one line) wait in memory and writers wait for room; Close
// writes everything, and a line after Close is written directly.
func TestLogWriterOrderAndBound(t *testing.T) {
	g := &gatedWriter{open: make(chan struct{}), entered: make(chan struct{}, 1<<16)}
	l := newLogWriter(g)
	l.Write([]byte("first\n"))
	<-g.entered // the goroutine is stuck writing "first"

	const writers, lines = 4, 1500 // 4 × 1500 × ~700 B: over twice the bound
	pad := bytes.Repeat([]byte("x"), 680)
	var wg sync.WaitGroup
	finished := make(chan struct{})
	for w := range writers {
		wg.Go(func() {
			for i := range lines {
				l.Write(fmt.Appendf(nil, "w%d %05d %s\n", w, i, pad))
			}
		})
	}
	go func() { wg.Wait(); close(finished) }()
	waitUntil(t, "the pending lines to reach the bound", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.pending) >= maxPendingLog
	})
	l.mu.Lock()
	pending := len(l.pending)
	l.mu.Unlock()
	if pending > maxPendingLog+len(pad)+32 {
		t.Fatalf("%d bytes pending, bound %d", pending, maxPendingLog)
	}
	select {
	case <-finished:
		t.Fatal("all lines were taken while the writer was stuck: nothing bounds the memory")
	default:
	}
	close(g.open)
	<-finished
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l.Write([]byte("after close\n"))

	out := g.buf.String()
	if !bytes.HasPrefix([]byte(out), []byte("first\n")) || !bytes.HasSuffix([]byte(out), []byte("after close\n")) {
		t.Fatalf("first or last line out of place: %.40q ... %.40q", out, out[max(0, len(out)-40):])
	}
	next := make([]int, writers)
	n := 0
	for line := range bytes.Lines([]byte(out)) {
		var w, i int
		if _, err := fmt.Sscanf(string(line), "w%d %05d ", &w, &i); err != nil {
			continue // first, after close
		}
		if i != next[w] || len(line) != len(fmt.Appendf(nil, "w%d %05d %s\n", w, i, pad)) {
			t.Fatalf("writer %d: line %d (%d bytes) where %d was due", w, i, len(line), next[w])
		}
		next[w]++
		n++
	}
	if n != writers*lines {
		t.Fatalf("%d lines written, want %d", n, writers*lines)
	}
}

// A failing underlying writer loses the lines, not the process: Close
// reports the error.
func TestLogWriterError(t *testing.T) {
	g := &gatedWriter{open: make(chan struct{}), entered: make(chan struct{}, 16), err: errors.New("disk full")}
	close(g.open)
	l := newLogWriter(g)
	if n, err := l.Write([]byte("a line\n")); n != 7 || err != nil {
		t.Fatalf("Write: %d, %v", n, err)
	}
	if err := l.Close(); err == nil || err.Error() != "disk full" {
		t.Fatalf("Close: %v", err)
	}
	if err := l.Close(); err == nil {
		t.Fatal("a second Close forgot the error")
	}
}

// Records through deferredHandler come out as a TextHandler writes them,
// formatted by the writer's goroutine, in their place among plain lines;
// after Close they are written directly.
func TestLogWriterDeferredRecords(t *testing.T) {
	noTime := &slog.HandlerOptions{ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey && len(groups) == 0 {
			return slog.Attr{}
		}
		return a
	}}
	var want bytes.Buffer
	direct := slog.New(slog.NewTextHandler(&want, noTime))

	got := newLogBuffer()
	l := newLogWriter(got)
	deferred := slog.New(l.deferredHandler(noTime))
	for i := range 50 {
		line := fmt.Sprintf("plain %d\n", i)
		want.WriteString(line)
		l.Write([]byte(line))
		for _, lg := range []*slog.Logger{direct, deferred} {
			lg.With("conn", i%3).WithGroup("req").Info("relayd: request", "method", "POST", "status", 200, "path", `/v1/"x"`)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	direct.Warn("after close", "n", 1)
	deferred.Warn("after close", "n", 1)
	if got.String() != want.String() {
		t.Fatalf("deferred lines differ:\n got %q\nwant %q", got.String(), want.String())
	}
}
