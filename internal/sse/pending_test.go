package sse

import (
	"io"
	"strings"
	"testing"
)

// TestPending: Pending is true exactly when the next event with data is
// whole in the buffer, so a caller that defers its flush on it never
// waits on a blocked read with unflushed events.
func TestPending(t *testing.T) {
	const two = "event: a\ndata: {\"n\":1}\n\nevent: b\ndata: {\"n\":2}\n\n"
	r := NewReaderSize(strings.NewReader(two+"event: c\ndata: {\"n\""), 4096)
	if r.Pending() {
		t.Fatal("pending before any read")
	}
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	if !r.Pending() {
		t.Fatal("the second event is buffered whole")
	}
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	if r.Pending() {
		t.Fatal("the third event is cut: Next would read")
	}
	cases := map[string]bool{
		"data: x\n\n":                     true,
		"data: x\r\n\r\n":                 true,
		": comment\ndata: x\n\n":          true,
		": keepalive\n\ndata: x\n\n":      false, // Next skips the comment and may block after it
		"event: a\n\n":                    false,
		"event: a\ndata: x":               false,
		"event: a\r\ndata: x\r\n\r\nmore": true,
		// The first blank line decides, whichever its line ends.
		"data: x\r\n\r\ndata: y\n\n": true,
		": c\r\n\r\ndata: y\n\n":     false,
	}
	for in, want := range cases {
		r := NewReaderSize(io.MultiReader(strings.NewReader("data: first\n\n"), strings.NewReader(in)), 4096)
		if _, err := r.Next(); err != nil {
			t.Fatal(err)
		}
		// Fill the buffer as a network read would.
		r.br.fill()
		if got := r.Pending(); got != want {
			t.Errorf("%q: Pending %v, want %v", in, got, want)
		}
	}
}
