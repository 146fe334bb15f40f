package relay

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/relaykit/responsesrelay/internal/sse"
)

// callWriter is a ResponseWriter that records each Write and Flush, or
// with discard keeps nothing (a benchmark's).
type callWriter struct {
	h       http.Header
	calls   []string // "w:<bytes>" or "flush"
	fail    error
	discard bool
}

func (w *callWriter) Header() http.Header {
	if w.h == nil {
		w.h = http.Header{}
	}
	return w.h
}
func (w *callWriter) WriteHeader(int) {}
func (w *callWriter) Write(p []byte) (int, error) {
	if w.fail != nil {
		return 0, w.fail
	}
	if !w.discard {
		w.calls = append(w.calls, "w:"+string(p))
	}
	return len(p), nil
}
func (w *callWriter) Flush() {
	if !w.discard {
		w.calls = append(w.calls, "flush")
	}
}

func sseFrame(typ, data string) string { return string(sse.AppendEvent(nil, typ, []byte(data))) }

// TestSSEWriterGathersBurst: the events of a burst (SendBuffered) reach
// the ResponseWriter in one Write at the flush, in order, with a ping or
// a flushed Send after them; a burst past maxGathered is written before
// its flush, so the gathered bytes stay bounded; a failed Write fails the
// calls after it without writing.
func TestSSEWriterGathersBurst(t *testing.T) {
	w := &callWriter{}
	s := newSSEWriter(w, nil, -1, nil)
	a, b, c := `{"type":"a"}`, `{"type":"b"}`, `{"type":"c"}`
	for _, ev := range []string{a, b} {
		if err := s.SendBuffered("x", []byte(ev)); err != nil {
			t.Fatal(err)
		}
	}
	if len(w.calls) != 0 {
		t.Fatalf("buffered events written before the flush: %q", w.calls)
	}
	if err := s.Send("x", []byte(c)); err != nil {
		t.Fatal(err)
	}
	want := []string{"w:" + sseFrame("x", a) + sseFrame("x", b) + sseFrame("x", c), "flush"}
	if strings.Join(w.calls, "|") != strings.Join(want, "|") {
		t.Fatalf("calls %q, want %q", w.calls, want)
	}
	if s.frame != nil {
		t.Fatal("the gathering buffer is kept after the flush")
	}

	w.calls = nil
	s.SendBuffered("x", []byte(a))
	s.Ping()
	want = []string{"w:" + sseFrame("x", a) + string(sse.Ping), "flush"}
	if strings.Join(w.calls, "|") != strings.Join(want, "|") {
		t.Fatalf("calls %q, want %q", w.calls, want)
	}

	// A burst over the bound goes out before its flush.
	w.calls = nil
	big := `{"type":"big","pad":"` + strings.Repeat("p", 1<<10) + `"}`
	n := 0
	for len(w.calls) == 0 {
		if n++; n > maxGathered/len(big)+2 {
			t.Fatalf("%d events of %d bytes gathered without a write", n, len(big))
		}
		s.SendBuffered("x", []byte(big))
	}
	if got := len(w.calls[0]) - 2; got < maxGathered || got > maxGathered+len(sseFrame("x", big)) {
		t.Fatalf("early write of %d bytes, bound %d", got, maxGathered)
	}
	s.SendBuffered("x", []byte(a))
	s.Flush()
	if len(w.calls) != 3 || w.calls[1] != "w:"+sseFrame("x", a) || w.calls[2] != "flush" {
		t.Fatalf("after the early write: %d calls, %.40q", len(w.calls), w.calls[1:])
	}

	w.calls, w.fail = nil, errors.New("broken pipe")
	if err := s.Send("x", []byte(a)); err == nil {
		t.Fatal("a failed write was not reported")
	}
	w.fail = nil
	if err := s.Send("x", []byte(b)); err == nil || len(w.calls) != 0 {
		t.Fatalf("a send after a failed write: %v, calls %q", err, w.calls)
	}
}
