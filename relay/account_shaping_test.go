package relay_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/relaykit/responsesrelay/internal/relaytestenv"
	"github.com/relaykit/responsesrelay/relay"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/relaykit/responsesrelay/scheduler"
	"github.com/tidwall/gjson"
)

// queryTap serves the fake upstream behind a listener that keeps each
// request's raw query, which the fake's log does not hold.
type queryTap struct {
	mu      sync.Mutex
	queries []string
	srv     *httptest.Server
}

func newQueryTap(t *testing.T, up http.Handler) *queryTap {
	q := &queryTap{}
	q.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q.mu.Lock()
		q.queries = append(q.queries, r.URL.RawQuery)
		q.mu.Unlock()
		up.ServeHTTP(w, r)
	}))
	t.Cleanup(q.srv.Close)
	return q
}

func (q *queryTap) last() string {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.queries) == 0 {
		return ""
	}
	return q.queries[len(q.queries)-1]
}

// TestAzureAccount: an account with AuthHeader "api-key" and a fixed
// api-version query: the upstream gets the bare key in api-key, no
// Authorization, and the query on every route (a turn, a stored
// response).
func TestAzureAccount(t *testing.T) {
	e := newEnv(t)
	tap := newQueryTap(t, e.up)
	e.addAccount(&scheduler.Account{ID: "az", BaseURL: tap.srv.URL + "/az/v1", AuthHeader: "api-key",
		Query: url.Values{"api-version": {"2025-04-01-preview"}}})
	e.up.SetKey("az", e.keys["az"])

	r := e.do(textReq)
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	q := e.lastRequest("az")
	if q.Header.Get("Api-Key") != e.keys["az"] || q.Header.Get("Authorization") != "" {
		t.Fatalf("upstream headers: api-key %q, authorization %q", q.Header.Get("Api-Key"), q.Header.Get("Authorization"))
	}
	if got := tap.last(); got != "api-version=2025-04-01-preview" {
		t.Fatalf("query %q", got)
	}

	id := jsonField(r.body, "id")
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/v1/responses/"+id+"/input_items?limit=1", nil)
	req.Header.Set("Authorization", "Bearer "+relaytestenv.ClientKey)
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("input_items: %d", resp.StatusCode)
	}
	if got, _ := url.ParseQuery(tap.last()); got.Get("api-version") != "2025-04-01-preview" || got.Get("limit") != "1" {
		t.Fatalf("input_items query %q", tap.last())
	}
}

// TestBodyPatch: the patched account gets store:false and no temperature;
// after it fails over, the next account gets the client's body as sent.
func TestBodyPatch(t *testing.T) {
	e := newEnv(t)
	e.addAccount(&scheduler.Account{ID: "patched", Priority: 0, BodyPatch: map[string]json.RawMessage{
		"store": json.RawMessage(`false`), "temperature": nil, "metadata.tier": json.RawMessage(`"gold"`)}})
	e.addAccount(&scheduler.Account{ID: "plain", Priority: 1})
	e.up.Script("patched", relaytest.Step{Status: 429})
	body := `{"model":"gpt-test","input":"hello there","temperature":0.5}`
	if r := e.do(body); r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	p := e.lastRequest("patched").Body
	if gjson.GetBytes(p, "store").Type != gjson.False || gjson.GetBytes(p, "temperature").Exists() ||
		gjson.GetBytes(p, "metadata.tier").Str != "gold" || gjson.GetBytes(p, "input").Str != "hello there" {
		t.Fatalf("patched account got %s", p)
	}
	if q := e.lastRequest("plain").Body; string(q) != body {
		t.Fatalf("the next account got %s, want the client's body", q)
	}
}

// TestBodyPatchChat: a chat account's patch applies to the Chat
// Completions body.
func TestBodyPatchChat(t *testing.T) {
	e := newEnv(t)
	e.addAccount(&scheduler.Account{ID: "c", WireAPI: "chat", BodyPatch: map[string]json.RawMessage{
		"user": nil, "n": json.RawMessage(`1`)}})
	if r := e.do(`{"model":"gpt-test","input":"hi","user":"u-1"}`); r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	q := e.lastRequest("c").Body
	if gjson.GetBytes(q, "user").Exists() || gjson.GetBytes(q, "n").Int() != 1 || !gjson.GetBytes(q, "messages").IsArray() {
		t.Fatalf("chat body %s", q)
	}
}

// TestBodyPatchInvalidSkipsAccount: an account whose patch touches a
// routed field never gets the turn: the attempt fails with ReasonAccount,
// the next account serves, and the log names the account once.
func TestBodyPatchInvalidSkipsAccount(t *testing.T) {
	e := newEnv(t)
	e.addAccount(&scheduler.Account{ID: "broken", Priority: 0, BodyPatch: map[string]json.RawMessage{"model": json.RawMessage(`"other"`)}})
	e.addAccount(&scheduler.Account{ID: "ok", Priority: 1})
	rec := observed(e)
	for range 2 {
		if r := e.do(textReq); r.status != 200 {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
	}
	e.settle()
	for _, q := range e.up.Requests() {
		if q.Account == "broken" {
			t.Fatalf("the account with an invalid patch got a request: %s", q.Body)
		}
	}
	rec.mu.Lock()
	first := rec.tries[0]
	rec.mu.Unlock()
	if first.Reason != relay.ReasonAccount || first.Outcome != relay.AttemptFailover {
		t.Fatalf("first attempt %+v", first)
	}
	if n := strings.Count(e.logs.String(), "invalid configuration"); n != 1 {
		t.Fatalf("logged %d times:\n%s", n, e.logs.String())
	}
}

func TestCheckBodyPatch(t *testing.T) {
	deep := strings.Repeat("[", 10000) + strings.Repeat("]", 10000)
	bad := map[string]map[string]json.RawMessage{
		"routed model":        {"model": json.RawMessage(`"x"`)},
		"routed nested input": {"input.0.content": json.RawMessage(`"x"`)},
		"routed stream":       {"stream": json.RawMessage(`false`)},
		"chat stream_options": {"stream_options.include_usage": json.RawMessage(`false`)},
		"wildcard":            {"tools.*.name": json.RawMessage(`"x"`)},
		"modifier":            {"@this": json.RawMessage(`1`)},
		"empty segment":       {"a..b": json.RawMessage(`1`)},
		"empty path":          {"": json.RawMessage(`1`)},
		"invalid json":        {"store": json.RawMessage(`fals`)},
		"two values":          {"store": json.RawMessage(`1 2`)},
		"deep":                {"metadata": json.RawMessage(deep)},
		"huge":                {"metadata": json.RawMessage(`"` + strings.Repeat("x", 70<<10) + `"`)},
	}
	for name, p := range bad {
		if err := relay.CheckBodyPatch(p); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	good := map[string]json.RawMessage{"store": json.RawMessage(`false`), "reasoning.summary": nil,
		"metadata.a-b_c": json.RawMessage(`{"k":[1,2]}`), "tools_extra": json.RawMessage(` true `)}
	if err := relay.CheckBodyPatch(good); err != nil {
		t.Fatal(err)
	}
	if err := relay.CheckBodyPatch(nil); err != nil {
		t.Fatal(err)
	}
}
