package relay

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// TestReadLimited: an answer is read whole whatever Content-Length it
// claims (true, too small, too large, none), in reads of any size; one
// over the limit is errJSONTooLarge; a read error is returned; and a
// claimed length far over what arrives does not size the buffer.
func TestReadLimited(t *testing.T) {
	body := strings.Repeat("x", 3000)
	for _, size := range []int64{-1, 0, 10, 3000, 3001, 1 << 40} {
		for _, r := range []io.Reader{strings.NewReader(body), iotest.OneByteReader(strings.NewReader(body))} {
			got, err := readLimited(r, size, 4096)
			if err != nil || string(got) != body {
				t.Fatalf("size %d: %d bytes, %v", size, len(got), err)
			}
		}
	}
	if _, err := readLimited(strings.NewReader(body), 3000, 2999); !errors.Is(err, errJSONTooLarge) {
		t.Fatalf("over the limit: %v", err)
	}
	if got, err := readLimited(strings.NewReader(body), -1, 3000); err != nil || len(got) != 3000 {
		t.Fatalf("at the limit: %d, %v", len(got), err)
	}
	boom := errors.New("reset")
	if _, err := readLimited(io.MultiReader(strings.NewReader("{"), iotest.ErrReader(boom)), 100, 4096); !errors.Is(err, boom) {
		t.Fatalf("read error: %v", err)
	}
	got, _ := readLimited(bytes.NewReader([]byte("{}")), 32<<20, 32<<20)
	if cap(got) > maxPresized+1 {
		t.Fatalf("a claimed 32 MiB sized the buffer to %d bytes", cap(got))
	}
}

func BenchmarkReadLimited(b *testing.B) {
	body := bytes.Repeat([]byte("x"), 1500)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := readLimited(bytes.NewReader(body), int64(len(body)), 32<<20); err != nil {
			b.Fatal(err)
		}
	}
}
