package relay_test

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/internal/relaytestenv"
	"github.com/relaykit/responsesrelay/relay"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/relaykit/responsesrelay/scheduler"
	"github.com/tidwall/gjson"
)

// newPriorityEnv makes account "bad" preferred (priority 0) over "good"
// (priority 1), so the first attempt always goes to "bad".
func newPriorityEnv(t *testing.T) *env {
	e := newEnv(t)
	e.addAccount(&scheduler.Account{ID: "bad", Priority: 0})
	e.addAccount(&scheduler.Account{ID: "good", Priority: 1})
	return e
}

// TestFailoverStatuses: every failover status on the first account moves
// the turn to the next one; the client sees only the good answer, and one
// usage record counts both attempts.
func TestFailoverStatuses(t *testing.T) {
	steps := map[string]relaytest.Step{"reset before headers": {Cut: true}, "in-band failed": {End: "refused server_is_overloaded"},
		"error event": {End: "error"}}
	for _, s := range []int{401, 402, 403, 408, 429, 500, 502, 503, 529} {
		steps[fmt.Sprint(s)] = relaytest.Step{Status: s}
	}
	for name, step := range steps {
		for _, stream := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/stream=%v", name, stream), func(t *testing.T) {
				e := newPriorityEnv(t)
				e.up.Script("bad", step)
				body := textReq
				if stream {
					body = streamReq
				}
				r := e.do(body)
				if r.status != 200 {
					t.Fatalf("status %d: %s", r.status, r.body)
				}
				if stream {
					if r.lastType() != "response.completed" || countType(r, "response.created") != 1 || r.types()[0] != "response.created" {
						t.Fatalf("events %v", r.types())
					}
					if strings.Contains(string(r.body), "server_is_overloaded") || countType(r, "error") != 0 {
						t.Fatalf("the refused attempt leaked to the client: %v", r.types())
					}
				}
				got := e.up.Requests()
				if len(got) != 2 || got[0].Account != "bad" || got[1].Account != "good" {
					t.Fatalf("attempts went to %v", accountsOf(got))
				}
				recs := e.sink.all()
				if len(recs) != 1 || recs[0].AccountID != "good" || recs[0].Attempts != 2 || recs[0].Status != billing.StatusCompleted {
					t.Fatalf("records %+v", recs)
				}
			})
		}
	}
}

func accountsOf(rs []relaytest.Received) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Account)
	}
	return out
}

// TestNoFailoverClientErrors: a 4xx the request caused goes back as the
// upstream said it, with no second attempt.
func TestNoFailoverClientErrors(t *testing.T) {
	e := newPriorityEnv(t)
	r := e.do(`{"model":"gpt-test","input":"x","previous_response_id":"resp_0123456789abcdef0123456789abcdef"}`)
	if r.status != 400 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	typ, _, param, code := apiErr(t, r.body)
	if code != "previous_response_not_found" || param != "previous_response_id" || typ != "invalid_request_error" {
		t.Fatalf("got %s", r.body)
	}
	if n := len(e.up.Requests()); n != 1 {
		t.Fatalf("%d attempts for a client error", n)
	}
	e.up.Script("bad", relaytest.Step{Status: 400, Body: `{"error":{"message":"context_length_exceeded: too long","type":"invalid_request_error","param":"input","code":"context_length_exceeded"}}`})
	r = e.do(streamReq)
	if r.status != 400 || !strings.Contains(string(r.body), "context_length_exceeded") {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if recs := e.sink.all(); len(recs) != 2 || recs[0].Status != billing.StatusUpstreamError || recs[0].InputTokens != 0 {
		t.Fatalf("records %+v", recs)
	}
}

// TestExhausted: when every account fails, the client gets the mapped
// error of the last failure.
func TestExhausted(t *testing.T) {
	cases := []struct {
		step       relaytest.Step
		status     int
		msg        string
		retryAfter bool
	}{
		{relaytest.Step{Status: 401}, 502, "Upstream authentication failed", false},
		{relaytest.Step{Status: 403}, 502, "Upstream access forbidden", false},
		{relaytest.Step{Status: 429, Header: http.Header{"Retry-After": {"7"}}}, 429, "Upstream rate limit exceeded, please retry later", true},
		{relaytest.Step{Status: 529}, 503, "Upstream service overloaded", true},
		{relaytest.Step{Status: 500}, 502, "Upstream service temporarily unavailable", false},
		{relaytest.Step{Status: 503}, 502, "Upstream service temporarily unavailable", false},
		{relaytest.Step{Status: 402}, 502, "Upstream request failed", false},
		{relaytest.Step{Cut: true}, 502, "Upstream request failed", false},
		{relaytest.Step{End: "refused server_is_overloaded"}, 503, "Upstream service overloaded", true},
	}
	for _, c := range cases {
		for _, stream := range []bool{false, true} {
			t.Run(fmt.Sprintf("%d/%s/stream=%v", c.status, c.msg, stream), func(t *testing.T) {
				e := newEnv(t, "a", "b", "c", "d", "e")
				for _, a := range e.accts {
					e.up.SetDefault(a, c.step)
				}
				body := textReq
				if stream {
					body = streamReq
				}
				r := e.do(body)
				if r.status != c.status {
					t.Fatalf("status %d, want %d: %s", r.status, c.status, r.body)
				}
				_, msg, _, _ := apiErr(t, r.body)
				if !strings.HasPrefix(msg, c.msg) {
					t.Fatalf("message %q, want %q", msg, c.msg)
				}
				if c.retryAfter && r.header.Get("Retry-After") == "" {
					t.Fatalf("no Retry-After")
				}
				if c.step.Status == 429 && r.header.Get("Retry-After") != "7" {
					t.Fatalf("Retry-After %q", r.header.Get("Retry-After"))
				}
				// MaxAccountSwitches = 3: four attempts, on four accounts.
				if n := len(e.up.Requests()); n != 4 {
					t.Fatalf("%d attempts, want 4", n)
				}
				// A turn that reached an upstream (got an answer) has one
				// record; one that never got response headers has none.
				recs := e.sink.all()
				if c.step.Cut {
					if len(recs) != 0 {
						t.Fatalf("records %+v for a turn no upstream answered", recs)
					}
					return
				}
				if len(recs) != 1 || recs[0].Attempts != 4 || recs[0].Status != billing.StatusUpstreamError {
					t.Fatalf("records %+v", recs)
				}
			})
		}
	}
}

// TestMapError: the MapError hook decides what the client sees for an
// upstream failure; nil answers and panics fall back to the built-in
// mapping, and keys the hook copies into its answer are masked.
func TestMapError(t *testing.T) {
	e := newEnv(t, "a")
	e.h.MaxAccountSwitches = -1
	var seen []relay.UpstreamError
	e.h.MapError = func(ue *relay.UpstreamError) *relay.APIError {
		seen = append(seen, *ue)
		switch {
		case ue.Status == 500 && bytes.Contains(bytes.ToLower(ue.Body), []byte("quota")):
			return &relay.APIError{Status: 402, Type: "insufficient_quota", Message: "Your plan is out of quota"}
		case ue.Status == 418:
			a := relaytestenv.PassUpstreamErrors(ue)
			a.Message = "copied: " + string(ue.Body) // a careless hook
			return a
		case ue.Status == 503:
			panic("hook bug")
		}
		return nil
	}
	e.up.Script("a", relaytest.Step{Status: 500, Body: `{"error":{"message":"insufficient quota on org","type":"server_error","param":null,"code":null}}`})
	r := e.do(textReq)
	if _, msg, _, _ := apiErr(t, r.body); r.status != 402 || msg != "Your plan is out of quota" {
		t.Fatalf("status %d msg %q", r.status, msg)
	}
	if len(seen) != 1 || !seen[0].Exhausted || seen[0].Status != 500 {
		t.Fatalf("hook saw %+v; want one exhausted 500", seen)
	}
	e.up.Script("a", relaytest.Step{Status: 418, Body: `{"error":{"message":"teapot sk-abcdefghijklmnop","type":"odd","param":null,"code":"tea"}}`})
	r = e.do(textReq)
	if r.status != 418 || gjson.GetBytes(r.body, "error.code").String() != "tea" || strings.Contains(string(r.body), "abcdefghijklmnop") {
		t.Fatalf("status %d body %s", r.status, r.body)
	}
	if len(seen) != 2 || seen[1].Exhausted || bytes.Contains(seen[1].Body, []byte("abcdefghijklmnop")) {
		t.Fatalf("hook saw %+v; want the request's own 418, masked", seen[1:])
	}
	e.up.Script("a", relaytest.Step{Status: 500})
	if r := e.do(textReq); r.status != 502 {
		t.Fatalf("nil answer: status %d, want the built-in 502", r.status)
	} else if _, msg, _, _ := apiErr(t, r.body); msg != "Upstream service temporarily unavailable" {
		t.Fatalf("nil answer: message %q", msg)
	}
	e.up.Script("a", relaytest.Step{Status: 503})
	if r := e.do(textReq); r.status != 502 {
		t.Fatalf("panicking hook: status %d, want the built-in 502", r.status)
	}
	if !strings.Contains(e.logs.String(), "MapError panicked") {
		t.Fatal("the hook's panic was not logged")
	}
}

func TestNoAccounts(t *testing.T) {
	e := newEnv(t)
	r := e.do(textReq)
	if r.status != 503 {
		t.Fatalf("status %d", r.status)
	}
	if _, msg, _, _ := apiErr(t, r.body); !strings.HasPrefix(msg, "No available accounts") {
		t.Fatalf("message %q", msg)
	}
	if !strings.Contains(e.logs.String(), "no available accounts") {
		t.Fatalf("no operator log line")
	}
}

// TestNoFailoverAfterOutput: an upstream that breaks after output is not
// retried; the stream ends with exactly one response.failed.
func TestNoFailoverAfterOutput(t *testing.T) {
	e := newPriorityEnv(t)
	e.up.Script("bad", relaytest.Step{After: 6, Cut: true, Deltas: 10})
	r := e.do(streamReq)
	if r.status != 200 || r.lastType() != "response.failed" || countType(r, "response.failed") != 1 || countType(r, "response.completed") != 0 {
		t.Fatalf("events %v", r.types())
	}
	last := r.events[len(r.events)-1].Data
	if gjson.GetBytes(last, "response.error.code").String() != "upstream_error" || gjson.GetBytes(last, "sequence_number").Int() != 6 ||
		gjson.GetBytes(last, "response.status").String() != "failed" {
		t.Fatalf("failed event %s", last)
	}
	if gjson.GetBytes(last, "response.id").String() != gjson.GetBytes(r.events[0].Data, "response.id").String() {
		t.Fatalf("failed event names another response")
	}
	if n := len(e.up.Requests()); n != 1 {
		t.Fatalf("%d attempts after output", n)
	}
	if recs := e.sink.all(); len(recs) != 1 || recs[0].Status != billing.StatusUpstreamError {
		t.Fatalf("records %+v", recs)
	}
}
