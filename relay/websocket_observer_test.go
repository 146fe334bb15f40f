package relay_test

import (
	"testing"
)

// TestObserverWebSocket: WebSocket turns are observed like POSTs, with
// their transport and number.
func TestObserverWebSocket(t *testing.T) {
	e := newWSEnv(t, true, "a")
	rec := &recorder{}
	e.rh.Observer = rec.observer()
	c := e.dial()
	for range 3 {
		c.send(create(``))
		if f := c.recvTurn(); typeOf(last(f)) != "response.completed" {
			t.Fatalf("frames %v", f)
		}
	}
	if err := waitRecords(e, 3); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the third turn's end", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return len(rec.ends) == 3
	})
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if s := rec.starts[2]; s.Transport != "ws" || s.Number != 3 || s.RequestID != rec.ends[2].Usage.RequestID {
		t.Fatalf("start %+v", s)
	}
	if end := rec.ends[2]; end.Usage.Transport != "ws" || end.Usage.Turn != 3 || end.Usage.Model != "gpt-test" || end.Subject == nil || end.Code != 200 || !end.Usage.Stream || end.Usage.FirstTokenMS < 0 || !end.Recorded {
		t.Fatalf("end %+v", end)
	}
}
