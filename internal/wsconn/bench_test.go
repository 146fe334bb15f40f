package wsconn

import (
	"context"
	"testing"
)

// loopConn hands out block over and over, and discards writes.
type loopConn struct {
	block []byte
	pos   int
}

func (l *loopConn) Read(p []byte) (int, error) {
	n := copy(p, l.block[l.pos:])
	l.pos = (l.pos + n) % len(l.block)
	return n, nil
}

func (l *loopConn) Write(p []byte) (int, error) { return len(p), nil }
func (l *loopConn) Close() error                { return nil }

// readStream is 64 text frames of 300 bytes, read in a loop; reads do
// not stop at frame boundaries.
func readStream() *loopConn {
	var block []byte
	for range 64 {
		block = append(block, textFrame(string(payload(300)))...)
	}
	return &loopConn{block: block}
}

func BenchmarkRead(b *testing.B) {
	c := newConn(readStream())
	b.SetBytes(300)
	b.ReportAllocs()
	for b.Loop() {
		msg, err := c.Read()
		if err != nil || len(msg) != 300 {
			b.Fatalf("Read = %d bytes, %v", len(msg), err)
		}
	}
}

func BenchmarkWriteText(b *testing.B) {
	c := newConn(&loopConn{})
	p := payload(1 << 10)
	ctx := context.Background()
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for b.Loop() {
		if err := c.WriteText(ctx, p); err != nil {
			b.Fatal(err)
		}
	}
}

func TestReadDoesNotAllocate(t *testing.T) {
	c := newConn(readStream())
	allocs := testing.AllocsPerRun(1000, func() {
		if msg, err := c.Read(); err != nil || len(msg) != 300 {
			t.Fatalf("Read = %d bytes, %v", len(msg), err)
		}
	})
	if allocs != 0 {
		t.Errorf("Read allocates %.1f times per message, want 0", allocs)
	}
}
