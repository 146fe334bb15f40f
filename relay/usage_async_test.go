package relay_test

import (
	"context"
	"sync"
	"testing"

	"github.com/relaykit/responsesrelay/billing"
)

// A billing.Async as the usage sink: a turn's record is queued directly
// while the Async is open (no hook call), and goes through Record as host
// code once it is closed (delivered to the sink before the turn ends);
// each turn gives exactly one record either way.
func TestUsageThroughAsync(t *testing.T) {
	e := newEnv(t, "a")
	var mu sync.Mutex
	var got []billing.Usage
	sink := billing.SinkFunc(func(_ context.Context, u billing.Usage) error {
		mu.Lock()
		got = append(got, u)
		mu.Unlock()
		return nil
	})
	a := billing.NewAsync(sink, billing.DeliveryOptions{Workers: 1, QueueSize: 4})
	e.h.Usage = a
	records := func() []billing.Usage {
		mu.Lock()
		defer mu.Unlock()
		return append([]billing.Usage(nil), got...)
	}

	open := e.do(`{"model":"gpt-test","input":"hi","stream":true}`)
	if open.status != 200 {
		t.Fatalf("turn: %d %s", open.status, open.body)
	}
	if err := a.Close(t.Context()); err != nil { // drains the queue
		t.Fatal(err)
	}
	if r := records(); len(r) != 1 || r[0].RequestID != open.header.Get("X-Relay-Request-Id") || r[0].Status != billing.StatusCompleted || r[0].OutputTokens == 0 {
		t.Fatalf("records after the open Async: %+v", r)
	}

	closed := e.do(`{"model":"gpt-test","input":"hi"}`)
	if closed.status != 200 {
		t.Fatalf("turn: %d %s", closed.status, closed.body)
	}
	// A closed Async delivers in Record itself: the record is there as
	// soon as the answer is.
	if r := records(); len(r) != 2 || r[1].RequestID != closed.header.Get("X-Relay-Request-Id") || r[1].Status != billing.StatusCompleted {
		t.Fatalf("records after the closed Async: %+v", r)
	}
}
