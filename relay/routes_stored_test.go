package relay_test

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/conversation"
	"github.com/relaykit/responsesrelay/internal/relaytestenv"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/tidwall/gjson"
)

// postTo posts body to a path of the relay with the client key.
func (e *env) postTo(path, body string) result {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+relaytestenv.ClientKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	r := result{status: resp.StatusCode, header: resp.Header, body: b.Bytes()}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		r.events, _ = relaytest.ReadSSE(bytes.NewReader(r.body))
	}
	return r
}

// lastRequest is the last request an account received.
func (e *env) lastRequest(account string) relaytest.Received {
	e.t.Helper()
	reqs := e.up.Requests()
	for i := len(reqs) - 1; i >= 0; i-- {
		if reqs[i].Account == account {
			return reqs[i]
		}
	}
	e.t.Fatalf("no request reached %s", account)
	return relaytest.Received{}
}

// TestStoredRoutes: retrieve (JSON and stream), input items and delete of
// a stored response go to the account that holds it; delete removes the
// relay's record too. None writes a usage record.
func TestStoredRoutes(t *testing.T) {
	e := newPriorityEnvIDs(t, "a", "b")
	store := &conversation.Memory{}
	e.h.Conversations = store
	id := jsonField(e.do(textReq).body, "id")
	e.up.Script("a", relaytest.Step{Status: 429, Header: http.Header{"Retry-After": {"60"}}})
	e.do(textReq) // a cools down: the stored response is still a's to serve

	r := e.call(http.MethodGet, "/v1/responses/"+id, relaytestenv.ClientKey)
	if r.status != 200 || gjson.GetBytes(r.body, "id").Str != id || gjson.GetBytes(r.body, "status").Str != "completed" {
		t.Fatalf("retrieve: %d %s", r.status, r.body)
	}
	if q := e.lastRequest("a"); q.Method != http.MethodGet || !strings.HasSuffix(q.Path, "/responses/"+id) {
		t.Fatalf("retrieve reached %s %s", q.Method, q.Path)
	}
	r = e.call(http.MethodGet, "/v1/responses/"+id+"/input_items", relaytestenv.ClientKey)
	if r.status != 200 || gjson.GetBytes(r.body, "object").Str != "list" || !strings.Contains(string(r.body), "hello there") {
		t.Fatalf("input items: %d %s", r.status, r.body)
	}
	r = e.call(http.MethodGet, "/v1/responses/"+id+"?stream=true", relaytestenv.ClientKey)
	evs, err := relaytest.ReadSSE(bytes.NewReader(r.body))
	if err != nil || r.status != 200 || len(evs) == 0 || evs[len(evs)-1].Type != "response.completed" {
		t.Fatalf("retrieve stream: %d %v %s", r.status, err, r.body)
	}
	if _, err := store.Get(context.Background(), e.subj.APIKeyID, id); err != nil {
		t.Fatalf("no record before delete: %v", err)
	}
	r = e.call(http.MethodDelete, "/v1/responses/"+id, relaytestenv.ClientKey)
	if r.status != 200 || !gjson.GetBytes(r.body, "deleted").Bool() {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	if _, err := store.Get(context.Background(), e.subj.APIKeyID, id); err == nil {
		t.Fatal("the relay kept its record of a deleted response")
	}
	if r := e.call(http.MethodGet, "/v1/responses/"+id, relaytestenv.ClientKey); r.status != http.StatusNotFound {
		t.Fatalf("retrieve after delete: %d %s", r.status, r.body)
	}
	if n := len(e.sink.all()); n != 2 {
		t.Fatalf("%d usage records, want the 2 turns only", n)
	}
}

// TestInputTokens: counted by an account that serves the model, with no
// usage record.
func TestInputTokens(t *testing.T) {
	e := newEnv(t, "a")
	r := e.postTo("/v1/responses/input_tokens", textReq)
	if r.status != 200 || gjson.GetBytes(r.body, "object").Str != "response.input_tokens" || gjson.GetBytes(r.body, "input_tokens").Int() <= 0 {
		t.Fatalf("count: %d %s", r.status, r.body)
	}
	if q := e.lastRequest("a"); !strings.HasSuffix(q.Path, "/responses/input_tokens") {
		t.Fatalf("went to %s", q.Path)
	}
	if r := e.postTo("/v1/responses/input_tokens", `{"input":"no model"}`); r.status != 400 {
		t.Fatalf("invalid body: %d", r.status)
	}
	if n := len(e.sink.all()); n != 0 {
		t.Fatalf("%d usage records for a count", n)
	}
}

// TestCompactV1: the compact endpoint answers a compaction; an account
// that 404s it is asked again, once, with a compaction_trigger, and the
// client still gets the v1 shape with one compaction item. One usage
// record each.
func TestCompactV1(t *testing.T) {
	e := newEnv(t, "a")
	body := `{"model":"gpt-test","input":[{"type":"message","role":"user","content":"remember this"}]}`
	for _, fallback := range []bool{false, true} {
		if fallback {
			e.up.Script("a", relaytest.Step{Status: 404})
		}
		before := len(e.up.Requests())
		r := e.postTo("/v1/responses/compact", body)
		if r.status != 200 || gjson.GetBytes(r.body, "object").Str != "response.compaction" {
			t.Fatalf("fallback %v: %d %s", fallback, r.status, r.body)
		}
		out := gjson.GetBytes(r.body, "output").Array()
		if len(out) < 2 || out[len(out)-1].Get("type").Str != "compaction" || out[0].Get("role").Str != "user" {
			t.Fatalf("fallback %v: output %s", fallback, r.body)
		}
		reqs := e.up.Requests()[before:]
		if fallback {
			if len(reqs) != 2 || !strings.HasSuffix(reqs[0].Path, "/responses/compact") || !strings.HasSuffix(reqs[1].Path, "/responses") ||
				gjson.GetBytes(reqs[1].Body, "input.1.type").Str != "compaction_trigger" {
				t.Fatalf("fallback requests: %v", reqs)
			}
		} else if len(reqs) != 1 || !strings.HasSuffix(reqs[0].Path, "/responses/compact") {
			t.Fatalf("compact requests: %v", reqs)
		}
	}
	recs := e.sink.all()
	if len(recs) != 2 || recs[0].OutputTokens == 0 || recs[1].OutputTokens == 0 {
		t.Fatalf("records %+v", recs)
	}
}

// TestBackgroundBilledOnce: a background turn is answered queued at once
// and recorded once, when it ends: by the poller when no client asks, and
// never again when a client retrieves it twice afterwards.
func TestBackgroundBilledOnce(t *testing.T) {
	e := newEnv(t, "a")
	e.h.BackgroundPoll = 5 * time.Millisecond
	hold := make(chan struct{})
	e.up.Script("a", relaytest.Step{Hold: hold})
	r := e.do(`{"model":"gpt-test","background":true,"input":"work on it"}`)
	if r.status != 200 || gjson.GetBytes(r.body, "status").Str != "queued" {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	id := jsonField(r.body, "id")
	if n := len(e.sink.all()); n != 0 {
		t.Fatalf("%d records while it runs", n)
	}
	close(hold)
	waitUntil(t, "the poller's record", func() bool { return len(e.sink.all()) == 1 })
	for range 2 {
		if r := e.call(http.MethodGet, "/v1/responses/"+id, relaytestenv.ClientKey); r.status != 200 || gjson.GetBytes(r.body, "status").Str != "completed" {
			t.Fatalf("retrieve: %d %s", r.status, r.body)
		}
	}
	recs := e.sink.all()
	if len(recs) != 1 || recs[0].ResponseID != id || recs[0].Status != billing.StatusCompleted || recs[0].OutputTokens == 0 {
		t.Fatalf("records %+v", recs)
	}
}

// TestBackgroundCancel: a running background response is cancelled on its
// account and recorded once, with what the upstream reports.
func TestBackgroundCancel(t *testing.T) {
	e := newEnv(t, "a")
	e.h.BackgroundPoll = -1 // only the client's calls record it
	hold := make(chan struct{})
	defer close(hold)
	e.up.Script("a", relaytest.Step{Hold: hold})
	id := jsonField(e.do(`{"model":"gpt-test","background":true,"input":"long work"}`).body, "id")
	r := e.call(http.MethodPost, "/v1/responses/"+id+"/cancel", relaytestenv.ClientKey)
	if r.status != 200 || gjson.GetBytes(r.body, "status").Str != "cancelled" {
		t.Fatalf("cancel: %d %s", r.status, r.body)
	}
	e.call(http.MethodGet, "/v1/responses/"+id, relaytestenv.ClientKey)
	recs := e.sink.all()
	if len(recs) != 1 || recs[0].ResponseID != id || recs[0].Status != billing.StatusIncomplete {
		t.Fatalf("records %+v", recs)
	}
}

// TestBackgroundPollerRetries: a poll that meets an upstream 5xx is asked
// again at the next tick; the response is recorded once, and the account
// stays usable.
func TestBackgroundPollerRetries(t *testing.T) {
	e := newEnv(t, "a")
	e.h.BackgroundPoll = 5 * time.Millisecond
	id := jsonField(e.do(`{"model":"gpt-test","background":true,"input":"soon"}`).body, "id")
	e.up.Script("a", relaytest.Step{Status: 500}, relaytest.Step{Status: 503})
	waitUntil(t, "the record", func() bool { return len(e.sink.all()) == 1 })
	gets := 0
	for _, q := range e.up.Requests() {
		if q.Method == http.MethodGet && strings.HasSuffix(q.Path, "/responses/"+id) {
			gets++
		}
	}
	if recs := e.sink.all(); gets < 3 || recs[0].ResponseID != id || recs[0].Status != billing.StatusCompleted {
		t.Fatalf("%d polls, records %+v", gets, recs)
	}
}

// TestConversationBinding: create requests naming the same conversation
// go to the account that holds it.
func TestConversationBinding(t *testing.T) {
	e := newEnv(t, "a", "b", "c")
	first := ""
	for i := range 6 {
		r := e.do(`{"model":"gpt-test","conversation":{"id":"conv_1"},"input":"turn"}`)
		if r.status != 200 {
			t.Fatalf("turn %d: %d %s", i, r.status, r.body)
		}
		acct := e.up.Requests()[len(e.up.Requests())-1].Account
		if first == "" {
			first = acct
		} else if acct != first {
			t.Fatalf("turn %d went to %s, the conversation is on %s", i, acct, first)
		}
	}
}

// TestStoredRouteHostile: a huge GET body, escaped or odd ids, and a
// stream flag in a body nested too deep do not reach an upstream or crash
// the relay.
func TestStoredRouteHostile(t *testing.T) {
	e := newEnv(t, "a")
	id := jsonField(e.do(textReq).body, "id")
	before := len(e.up.Requests())
	for _, path := range []string{"/v1/responses/..%2F..%2Fadmin", "/v1/responses/%00", "/v1/responses/" + strings.Repeat("x", 8192)} {
		if r := e.call(http.MethodGet, path, relaytestenv.ClientKey); r.status != http.StatusNotFound {
			t.Fatalf("GET %s: %d", path[:min(len(path), 40)], r.status)
		}
	}
	if n := len(e.up.Requests()) - before; n != 0 {
		t.Fatalf("%d upstream requests for ids never bound", n)
	}
	for _, body := range []string{`{"stream":true,"pad":"` + strings.Repeat("x", 1<<20) + `"}`, strings.Repeat("[", 100000)} {
		req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/v1/responses/"+id, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+relaytestenv.ClientKey)
		resp, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
			t.Fatalf("a hostile GET body: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
}

// TestBackgroundStreamClientGone: a client that leaves a streamed
// background turn before it ends does not end the response upstream: the
// relay records it once, when the poller sees it end, with its full usage.
func TestBackgroundStreamClientGone(t *testing.T) {
	e := newEnv(t, "a")
	e.h.BackgroundPoll = 5 * time.Millisecond
	e.h.DrainTimeout = -1 // no drain: the poller alone learns the usage
	hold := make(chan struct{})
	e.up.Script("a", relaytest.Step{After: 3, Hold: hold})
	ctx, cancel := context.WithCancel(context.Background())
	resp := e.streamOpen(ctx, `{"model":"gpt-test","stream":true,"background":true,"input":"go on without me"}`)
	e.WaitInFlight("a", 1)
	cancel()
	resp.Body.Close()
	waitUntil(t, "the relay to let the stream go", func() bool { return e.h.Active() == 0 })
	if n := len(e.sink.all()); n != 0 {
		t.Fatalf("%d records before the response ended", n)
	}
	close(hold)
	waitUntil(t, "the poller's record", func() bool { return len(e.sink.all()) == 1 })
	if u := e.sink.all()[0]; u.Status != billing.StatusCompleted || u.OutputTokens == 0 {
		t.Fatalf("record %+v", u)
	}
}

// TestObserverRecordedFlag: the Observer's TurnEnd says whether the turn
// handed a usage record to the sink: a background turn's record comes
// later (its TurnEnd names the response, not recorded), a token count has
// none.
func TestObserverRecordedFlag(t *testing.T) {
	e := newEnv(t, "a")
	e.h.BackgroundPoll = -1
	rec := observed(e)
	hold := make(chan struct{})
	defer close(hold)
	e.up.Script("a", relaytest.Step{Hold: hold})
	id := jsonField(e.do(`{"model":"gpt-test","background":true,"input":"later"}`).body, "id")
	e.postTo("/v1/responses/input_tokens", textReq)
	e.do(textReq)
	e.settle() // TurnEnd comes after the client's answer
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.ends) != 3 {
		t.Fatalf("%d TurnEnd calls", len(rec.ends))
	}
	bg, count, turn := rec.ends[0], rec.ends[1], rec.ends[2]
	if bg.Recorded || bg.Usage.ResponseID != id || bg.Usage.AccountID != "a" || bg.Code != 200 {
		t.Fatalf("background TurnEnd %+v", bg)
	}
	if count.Recorded || count.Usage.Status != billing.StatusCompleted || count.Code != 200 {
		t.Fatalf("token count TurnEnd %+v", count)
	}
	if !turn.Recorded || turn.Usage.Status != billing.StatusCompleted {
		t.Fatalf("turn TurnEnd %+v", turn)
	}
}
