package sse

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// events reads every event of in through a Reader with a read buffer of
// size, fed by wrap(in).
func events(t testing.TB, in []byte, size int, wrap func(io.Reader) io.Reader) ([]string, error) {
	r := NewReaderSize(wrap(bytes.NewReader(in)), size)
	r.MaxEventBytes = 1 << 16
	var out []string
	for {
		ev, err := r.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, string(ev.Type)+"|"+string(ev.Data))
	}
}

// TestBurstBuffer: a stream read through a small buffer, in bursts larger
// than it, in single bytes and in halves, gives the same events as one
// read through a large buffer, and the borrowed burst buffer is given back
// once the reader has caught up.
func TestBurstBuffer(t *testing.T) {
	var b strings.Builder
	for i := range 300 {
		fmt.Fprintf(&b, "event: e%d\ndata: {\"n\":%d,\"pad\":%q}\n\n", i, i, strings.Repeat("x", i%97))
		if i%50 == 0 {
			fmt.Fprintf(&b, ": comment\r\ndata: long %s\r\n\r\n", strings.Repeat("y", 5000))
		}
	}
	in := []byte(b.String())
	want, err := events(t, in, 64<<10, func(r io.Reader) io.Reader { return r })
	if err != nil || len(want) != 306 {
		t.Fatalf("%d events, %v", len(want), err)
	}
	wraps := map[string]func(io.Reader) io.Reader{
		"whole":   func(r io.Reader) io.Reader { return r },
		"bytes":   iotest.OneByteReader,
		"halves":  iotest.HalfReader,
		"dataerr": iotest.DataErrReader,
	}
	for name, wrap := range wraps {
		for _, size := range []int{16, 100, 2048} {
			got, err := events(t, in, size, wrap)
			if err != nil || strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Fatalf("%s, %d-byte buffer: %d events, %v", name, size, len(got), err)
			}
		}
	}

	// A burst borrows the large buffer; the first read that leaves room
	// gives it back.
	pr, pw := io.Pipe()
	r := NewReaderSize(pr, 64)
	burst := []byte(strings.Repeat("event: d\ndata: {\"delta\":\"abc\"}\n\n", 100))
	go func() {
		pw.Write(burst) // more than the small buffer holds
		pw.Write([]byte("data: end\n\n"))
	}()
	for r.br.big == nil {
		if _, err := r.Next(); err != nil {
			t.Fatal(err)
		}
	}
	for {
		ev, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		if string(ev.Data) == "end" {
			break
		}
	}
	pw.Close()
	if _, err := r.Next(); err != io.EOF {
		t.Fatalf("after the end: %v", err)
	}
	if r.br.big != nil {
		t.Fatal("the burst buffer was kept after the burst")
	}
	r.Reset(nil)
	if r.br.big != nil || len(r.br.buf) != 64 {
		t.Fatal("Reset kept the burst buffer")
	}
}

// FuzzReaderBuffers: a tiny read buffer fed a byte at a time parses the
// same events as a large one.
func FuzzReaderBuffers(f *testing.F) {
	for _, s := range []string{"event: a\ndata: 1\n\n", "data: x\r\ndata: y\r\n\r\n", ": c\n\ndata: z\n\n", "data: " + strings.Repeat("z", 100) + "\n\n"} {
		f.Add([]byte(s), uint8(3))
	}
	f.Fuzz(func(t *testing.T, in []byte, size uint8) {
		want, werr := events(t, in, 1<<20, func(r io.Reader) io.Reader { return r })
		got, gerr := events(t, in, int(size%64)+16, iotest.OneByteReader)
		if (werr == nil) != (gerr == nil) || strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("large buffer: %q %v\nsmall buffer: %q %v", want, werr, got, gerr)
		}
	})
}

// TestIdleHoldsLittle: a reader that waits for its source after a large
// event keeps no large scratch, and one-line events come out whole and in
// order whether their blank line arrives with them or later.
func TestIdleHoldsLittle(t *testing.T) {
	pr, pw := io.Pipe()
	r := NewReaderSize(pr, 64)
	big := strings.Repeat("x", burstSize+maxScratch) // longer than any buffer
	go func() {
		pw.Write([]byte("event: big\r\ndata: " + big + "\r\n\r\n"))
		pw.Write([]byte("data: {\"n\":1}\n"))
		pw.Write([]byte("\n"))
		pw.Write([]byte("data: {\"n\":2}\n\nevent: t\ndata: a\ndata: b\n\n"))
		pw.Close()
	}()
	ev, err := r.Next()
	if err != nil || string(ev.Type) != "big" || string(ev.Data) != big {
		t.Fatalf("big event: %d bytes, %v", len(ev.Data), err)
	}
	if cap(r.line)+cap(r.data) <= maxScratch {
		t.Fatal("the big line was not assembled in the scratch (test premise)")
	}
	want := []string{`|{"n":1}`, `|{"n":2}`, "t|a\nb"}
	for i, w := range want {
		ev, err := r.Next()
		if err != nil || string(ev.Type)+"|"+string(ev.Data) != w {
			t.Fatalf("event %d: %q %q, %v", i, ev.Type, ev.Data, err)
		}
		if cap(r.line) > maxScratch || cap(r.data) > maxScratch {
			t.Fatalf("event %d: scratch of %d and %d bytes kept past a wait", i, cap(r.line), cap(r.data))
		}
	}
	if _, err := r.Next(); err != io.EOF {
		t.Fatalf("at the end: %v", err)
	}
}
