package relay_test

import (
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/relaykit/responsesrelay/scheduler"
)

// closedURL is a base URL on a loopback port nothing listens on: every
// connection is refused.
func closedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr + "/v1"
}

// upstreamFault is one way an upstream account fails, set up on e's
// accounts named in ids.
type upstreamFault struct {
	name string
	set  func(t *testing.T, e *env, ids ...string)
	// What the client sees once every account failed so.
	status int
	msg    string
	// answered: the upstream answered (a status or a stream), so the turn
	// is a usage record; otherwise no upstream did visible work.
	answered bool
}

func stepFault(step relaytest.Step) func(t *testing.T, e *env, ids ...string) {
	return func(t *testing.T, e *env, ids ...string) {
		for _, id := range ids {
			e.up.SetDefault(id, step)
		}
	}
}

func upstreamFaults() []upstreamFault {
	html := relaytest.Step{Status: 403, Header: http.Header{"Content-Type": {"text/html"}},
		Body: "<html><body>Access denied by proxy sk-proxyleak-0123456789</body></html>"}
	return []upstreamFault{
		{"refused", func(t *testing.T, e *env, ids ...string) {
			for _, id := range ids {
				e.addAccount(&scheduler.Account{ID: id, BaseURL: closedURL(t)})
			}
		}, 502, "Upstream request failed", false},
		{"reset before headers", stepFault(relaytest.Step{Cut: true}), 502, "Upstream request failed", false},
		{"401", stepFault(relaytest.Step{Status: 401}), 502, "Upstream authentication failed", true},
		{"402", stepFault(relaytest.Step{Status: 402}), 502, "Upstream request failed", true},
		{"403 json", stepFault(relaytest.Step{Status: 403}), 502, "Upstream access forbidden", true},
		{"403 html", stepFault(html), 502, "Upstream access forbidden", true},
		{"408", stepFault(relaytest.Step{Status: 408}), 502, "Upstream request failed", true},
		{"429", stepFault(relaytest.Step{Status: 429}), 429, "Upstream rate limit exceeded", true},
		{"500", stepFault(relaytest.Step{Status: 500}), 502, "Upstream service temporarily unavailable", true},
		{"502", stepFault(relaytest.Step{Status: 502}), 502, "Upstream service temporarily unavailable", true},
		{"503", stepFault(relaytest.Step{Status: 503}), 502, "Upstream service temporarily unavailable", true},
		{"529", stepFault(relaytest.Step{Status: 529}), 503, "Upstream service overloaded", true},
		{"in-band failed", stepFault(relaytest.Step{End: "refused server_is_overloaded"}), 503, "Upstream service overloaded", true},
		{"error event", stepFault(relaytest.Step{End: "error"}), 502, "Upstream request failed", true},
	}
}

// addFaulty adds accounts a..d (equal priority) and applies f to them.
func addFaulty(t *testing.T, e *env, f upstreamFault) {
	ids := []string{"a", "b", "c", "d"}
	if f.name != "refused" {
		for _, id := range ids {
			e.addAccount(&scheduler.Account{ID: id})
		}
	}
	f.set(t, e, ids...)
}

// TestFaultUpstreamExhausted: every account fails the same way; the client
// gets the documented mapping as JSON (nothing was streamed: the failed
// attempts' events were held back), no upstream detail leaks, and the
// turn is one record only when some upstream answered.
func TestFaultUpstreamExhausted(t *testing.T) {
	for _, f := range upstreamFaults() {
		for _, stream := range []bool{false, true} {
			name := f.name + "/json"
			if stream {
				name = f.name + "/stream"
			}
			t.Run(name, func(t *testing.T) {
				e := newEnv(t)
				addFaulty(t, e, f)
				body := textReq
				if stream {
					body = streamReq
				}
				r := e.do(body)
				if r.status != f.status || !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
					t.Fatalf("status %d (%s), want %d: %s", r.status, r.header.Get("Content-Type"), f.status, r.body)
				}
				if _, msg, _, _ := apiErr(t, r.body); !strings.HasPrefix(msg, f.msg) {
					t.Fatalf("message %q, want %q", msg, f.msg)
				}
				for _, leak := range []string{"html", "proxyleak", "sk-test"} {
					if strings.Contains(string(r.body), leak) {
						t.Fatalf("%q reached the client: %s", leak, r.body)
					}
				}
				recs := e.sink.all()
				if !f.answered {
					if len(recs) != 0 {
						t.Fatalf("records %+v for a turn no upstream answered", recs)
					}
					return
				}
				if len(recs) != 1 || recs[0].Status != billing.StatusUpstreamError || recs[0].Attempts != 4 || recs[0].OutputTokens != 0 {
					t.Fatalf("records %+v", recs)
				}
			})
		}
	}
}

// TestFaultUpstreamFailover: one account fails, the next serves; the client
// sees only the good answer and one record names the good account.
func TestFaultUpstreamFailover(t *testing.T) {
	for _, f := range upstreamFaults() {
		t.Run(f.name, func(t *testing.T) {
			e := newEnv(t)
			if f.name == "refused" {
				e.addAccount(&scheduler.Account{ID: "bad", Priority: 0, BaseURL: closedURL(t)})
			} else {
				e.addAccount(&scheduler.Account{ID: "bad", Priority: 0})
				f.set(t, e, "bad")
			}
			e.addAccount(&scheduler.Account{ID: "good", Priority: 1})
			r := e.do(streamReq)
			if r.status != 200 || r.lastType() != "response.completed" || countType(r, "response.created") != 1 || countType(r, "error") != 0 {
				t.Fatalf("status %d, events %v", r.status, r.types())
			}
			recs := e.sink.all()
			if len(recs) != 1 || recs[0].AccountID != "good" || recs[0].Attempts != 2 || recs[0].Status != billing.StatusCompleted {
				t.Fatalf("records %+v", recs)
			}
			checkUsage(t, recs[0], e.up.Served()[len(e.up.Served())-1].Usage)
		})
	}
}

// TestFaultHeaderTimeout: an upstream that accepts the request and never
// answers is abandoned after StreamIdleTimeout (streams) or
// JSONHeaderTimeout, penalized, and the turn moves on.
func TestFaultHeaderTimeout(t *testing.T) {
	for _, body := range []string{streamReq, textReq} {
		e := newPriorityEnv(t)
		e.h.StreamIdleTimeout = 250 * time.Millisecond
		e.h.JSONHeaderTimeout = 250 * time.Millisecond
		e.up.Script("bad", relaytest.Step{Hold: make(chan struct{})})
		r := e.do(body)
		if r.status != 200 {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		recs := e.sink.all()
		if len(recs) != 1 || recs[0].AccountID != "good" || recs[0].Attempts != 2 {
			t.Fatalf("records %+v", recs)
		}
	}
}

// TestFaultSlowFirstToken: an upstream that thinks for a while before its
// first token is waited for (pings keep a stream alive); the answer and its
// first-token time are normal.
func TestFaultSlowFirstToken(t *testing.T) {
	for _, body := range []string{streamReq, textReq} {
		e := newEnv(t, "a")
		e.h.KeepAlive = 10 * time.Millisecond
		e.up.Script("a", relaytest.Step{FirstTokenDelay: 80 * time.Millisecond})
		r := e.do(body)
		if r.status != 200 {
			t.Fatalf("status %d", r.status)
		}
		if body == streamReq && (r.lastType() != "response.completed" || !strings.Contains(string(r.body), ": ping")) {
			t.Fatalf("events %v", r.types())
		}
		recs := e.sink.all()
		if len(recs) != 1 || recs[0].Status != billing.StatusCompleted || recs[0].FirstTokenMS < 80 {
			t.Fatalf("records %+v", recs)
		}
		checkUsage(t, recs[0], e.up.Served()[0].Usage)
	}
}

// TestFaultJSONBodyBroken: a non-streaming answer whose body stops
// arriving (after StreamIdleTimeout) or is cut is an upstream failure
// before output: the turn moves on, and nothing half-read reaches the
// client.
func TestFaultJSONBodyBroken(t *testing.T) {
	for name, step := range map[string]relaytest.Step{"stalls": {After: 1, Hold: make(chan struct{})}, "cut": {After: 1, Cut: true}} {
		t.Run(name, func(t *testing.T) {
			e := newPriorityEnv(t)
			e.h.StreamIdleTimeout = 250 * time.Millisecond
			e.up.Script("bad", step)
			r := e.do(textReq)
			if r.status != 200 || !strings.Contains(string(r.body), `"status":"completed"`) {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			if recs := e.sink.all(); len(recs) != 1 || recs[0].AccountID != "good" || recs[0].Attempts != 2 {
				t.Fatalf("records %+v", recs)
			}
		})
		t.Run(name+"/exhausted", func(t *testing.T) {
			e := newEnv(t, "a")
			e.h.StreamIdleTimeout = 250 * time.Millisecond
			e.up.SetDefault("a", step)
			r := e.do(textReq)
			if r.status != 502 {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			apiErr(t, r.body)
			if recs := e.sink.all(); len(recs) != 1 || recs[0].Status != billing.StatusUpstreamError {
				t.Fatalf("records %+v", recs)
			}
		})
	}
}
