package relay_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/relaykit/responsesrelay/scheduler"
	"github.com/tidwall/gjson"
)

func TestJSONTurn(t *testing.T) {
	e := newEnv(t, "a")
	r := e.do(textReq)
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if got := gjson.GetBytes(r.body, "object").String(); got != "response" {
		t.Fatalf("not a response object: %s", r.body)
	}
	if r.header.Get("X-Relay-Request-Id") == "" || r.header.Get("X-Request-Id") == "" {
		t.Fatalf("missing request ids: %v", r.header)
	}
	served := e.up.Served()
	recs := e.sink.all()
	if len(served) != 1 || len(recs) != 1 {
		t.Fatalf("served %d, records %d", len(served), len(recs))
	}
	u, s := recs[0], served[0]
	checkUsage(t, u, s.Usage)
	if u.Status != billing.StatusCompleted || u.Stream || u.Transport != "http" || u.Attempts != 1 || u.AccountID != "a" ||
		u.ResponseID != s.ResponseID || u.RequestID != r.header.Get("X-Relay-Request-Id") || u.UserID != "u1" || u.APIKeyID != "k1" || u.GroupID != "g" {
		t.Fatalf("record %+v", u)
	}
}

func checkUsage(t *testing.T, u billing.Usage, want relaytest.Usage) {
	t.Helper()
	if u.InputTokens != want.Input || u.CachedInputTokens != want.Cached || u.OutputTokens != want.Output ||
		u.ReasoningTokens != want.Reasoning || u.TotalTokens != (want.Input+want.Output) {
		t.Fatalf("usage (in %d cached %d out %d reasoning %d total %d), upstream sent %+v (total %d)",
			u.InputTokens, u.CachedInputTokens, u.OutputTokens, u.ReasoningTokens, u.TotalTokens, want, (want.Input + want.Output))
	}
	if want.Input == 0 {
		t.Fatalf("the upstream sent no usage; the test proves nothing")
	}
}

func TestStreamTurn(t *testing.T) {
	e := newEnv(t, "a")
	r := e.do(`{"model":"gpt-test","stream":true,"input":"hello there","reasoning":{"effort":"low"}}`)
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	for k, v := range map[string]string{"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"} {
		if got := r.header.Get(k); got != v {
			t.Fatalf("%s = %q, want %q", k, got, v)
		}
	}
	want := []string{"response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"}
	got := r.types()
	if len(got) < 8 || strings.Join(got[:4], ",") != strings.Join(want, ",") || r.lastType() != "response.completed" {
		t.Fatalf("event order %v", got)
	}
	for i, ev := range r.events {
		if seq := gjson.GetBytes(ev.Data, "sequence_number").Int(); seq != int64(i) {
			t.Fatalf("event %d has sequence_number %d", i, seq)
		}
		if typ := gjson.GetBytes(ev.Data, "type").String(); typ != ev.Type {
			t.Fatalf("event line %q but type %q", ev.Type, typ)
		}
	}
	recs, served := e.sink.all(), e.up.Served()
	if len(recs) != 1 || len(served) != 1 {
		t.Fatalf("records %d served %d", len(recs), len(served))
	}
	checkUsage(t, recs[0], served[0].Usage)
	if recs[0].ReasoningTokens == 0 || !recs[0].Stream || recs[0].FirstTokenMS < 0 || recs[0].ResponseID == "" {
		t.Fatalf("record %+v", recs[0])
	}
}

// TestLargeEvent relays an event far over 64 KiB intact.
func TestLargeEvent(t *testing.T) {
	e := newEnv(t, "a")
	e.up.Script("a", relaytest.Step{EventPadding: 200 << 10, Deltas: 2})
	r := e.do(streamReq)
	if r.lastType() != "response.completed" {
		t.Fatalf("stream ended with %q", r.lastType())
	}
	var big int
	for _, ev := range r.events {
		if len(ev.Data) > big {
			big = len(ev.Data)
		}
		if !json.Valid(ev.Data) {
			t.Fatalf("event %s is not valid JSON", ev.Type)
		}
	}
	if big < 200<<10 {
		t.Fatalf("largest event %d bytes", big)
	}
}

func TestModelMap(t *testing.T) {
	e := newEnv(t)
	e.addAccount(&scheduler.Account{ID: "m", ModelMap: map[string]string{"gpt-test": "gpt-upstream"}, Models: []string{"gpt-*"}})
	for _, body := range []string{textReq, streamReq} {
		r := e.do(body)
		if r.status != 200 {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		if strings.Contains(string(r.body), "gpt-upstream") {
			t.Fatalf("the upstream model leaked to the client: %s", r.body)
		}
		if len(r.events) == 0 && gjson.GetBytes(r.body, "model").String() != "gpt-test" {
			t.Fatalf("model not rewritten back: %s", r.body)
		}
		if len(r.events) > 0 && gjson.GetBytes(r.events[len(r.events)-1].Data, "response.model").String() != "gpt-test" {
			t.Fatalf("terminal model not rewritten back: %s", r.events[len(r.events)-1].Data)
		}
	}
	for _, rq := range e.up.Requests() {
		if m := gjson.GetBytes(rq.Body, "model").String(); m != "gpt-upstream" {
			t.Fatalf("upstream got model %q", m)
		}
	}
	for _, u := range e.sink.all() {
		if u.Model != "gpt-test" || u.UpstreamModel != "gpt-upstream" {
			t.Fatalf("record models %q/%q", u.Model, u.UpstreamModel)
		}
	}
	if r := e.do(`{"model":"other","input":"x"}`); r.status != 503 {
		t.Fatalf("unserved model: status %d", r.status)
	} else if _, msg, _, _ := apiErr(t, r.body); !strings.Contains(msg, "No available accounts") || !strings.Contains(msg, "other") {
		t.Fatalf("message %q", msg)
	}
}

func TestGetIs426(t *testing.T) {
	e := newEnv(t, "a")
	resp, err := e.srv.Client().Get(e.srv.URL + "/v1/responses")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 426 {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

// TestErrorJSONEscaping: client text echoed in an error is valid JSON.
func TestErrorJSONEscaping(t *testing.T) {
	e := newEnv(t, "a")
	r := e.do("{\"model\":\"m\",\"input\":[{\"type\":\"function_call_output\",\"call_id\":\"c\\u0001\\\"x\",\"output\":\"1\"}]}")
	if r.status != 400 || !json.Valid(r.body) {
		t.Fatalf("status %d, body %s", r.status, r.body)
	}
}

// TestWaitCoversDrain: Wait returns only after a turn whose client left has
// been drained and recorded.
func TestWaitCoversDrain(t *testing.T) {
	e := newEnv(t, "a")
	if err := e.h.Shutdown(context.Background()); err != nil || e.h.Active() != 0 {
		t.Fatalf("idle handler: %v, active %d", err, e.h.Active())
	}
	e.up.Script("a", relaytest.Step{FirstTokenDelay: 100 * time.Millisecond})
	cancel, done := e.abandonable(streamReq)
	e.WaitInFlight("a", 1)
	cancel()
	<-done
	ctx, stop := context.WithTimeout(context.Background(), 5*time.Second)
	defer stop()
	if err := e.h.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(e.sink.all()); n != 1 {
		t.Fatalf("Wait returned before the drained turn was recorded (%d records)", n)
	}
}
