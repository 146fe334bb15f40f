package relay_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/relaykit/responsesrelay/scheduler"
	"github.com/tidwall/gjson"
)

// burstEvents is a stream of n text deltas, between response.created and
// response.completed, as one SSE body.
func burstEvents(n int) string {
	var b strings.Builder
	ev := func(typ, data string) { fmt.Fprintf(&b, "event: %s\ndata: %s\n\n", typ, data) }
	ev("response.created", `{"type":"response.created","sequence_number":0,"response":{"id":"resp_burst","object":"response","status":"in_progress","model":"gpt-test","output":[]}}`)
	for i := range n {
		ev("response.output_text.delta", fmt.Sprintf(`{"type":"response.output_text.delta","sequence_number":%d,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"token %d","logprobs":[],"obfuscation":"%s"}`, i+1, i, strings.Repeat("x", 80)))
	}
	ev("response.completed", fmt.Sprintf(`{"type":"response.completed","sequence_number":%d,"response":{"id":"resp_burst","object":"response","status":"completed","model":"gpt-test","output":[],"usage":{"input_tokens":3,"output_tokens":%d,"total_tokens":%d}}}`, n+1, n, n+3))
	return b.String()
}

// writeCounter counts the Write calls a handler makes; Unwrap lets the
// relay flush through it.
type writeCounter struct {
	http.ResponseWriter
	writes atomic.Int64
}

func (w *writeCounter) Write(b []byte) (int, error) {
	w.writes.Add(1)
	return w.ResponseWriter.Write(b)
}

func (w *writeCounter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// TestStreamBurstInFewWrites: events that reach the relay together (an
// upstream's burst) go to net/http in a few large writes, not one per
// event, and reach the client whole and in order: each Write of a response
// costs net/http a pass through its buffer and its chunking.
func TestStreamBurstInFewWrites(t *testing.T) {
	const deltas = 400
	body := []byte(burstEvents(deltas))
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		w.Write(body) // the whole stream in one chunk
	}))
	t.Cleanup(up.Close)
	e := newEnv(t)
	e.AddAccount(&scheduler.Account{ID: "a", BaseURL: up.URL + "/v1"})
	var counter *writeCounter
	e.mount(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		counter = &writeCounter{ResponseWriter: w}
		e.serve(counter, r)
	}))
	r := e.do(streamReq)
	if r.status != 200 || r.lastType() != "response.completed" {
		t.Fatalf("status %d, last event %q", r.status, r.lastType())
	}
	if n := countType(r, "response.output_text.delta"); n != deltas {
		t.Fatalf("%d deltas, want %d", n, deltas)
	}
	seq := int64(-1)
	for _, ev := range r.events {
		s := gjson.GetBytes(ev.Data, "sequence_number").Int()
		if s <= seq {
			t.Fatalf("event %s out of order: sequence_number %d after %d", ev.Type, s, seq)
		}
		seq = s
	}
	e.settle()
	// Before: one Write per event (402). Now one per 16 KiB gathered.
	t.Logf("writes %d", counter.writes.Load())
	if w, max := counter.writes.Load(), int64(len(r.body)/(16<<10)+3); w > max {
		t.Fatalf("%d writes for %d events (%d bytes), want at most %d", w, len(r.events), len(r.body), max)
	}
}
