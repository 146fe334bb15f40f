package relay_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/internal/relaytestenv"
	"github.com/relaykit/responsesrelay/scheduler"
)

// addLoopAccount adds an account whose upstream answers 200 and then
// repeats response.created until the relay hangs up. The returned channel
// is closed when its handler has returned, i.e. the relay cut the stream.
func (e *env) addLoopAccount(id string, priority int) <-chan struct{} {
	e.t.Helper()
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(done)
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		for i := 0; ; i++ {
			if _, err := fmt.Fprint(w, sseFrame("response.created", rawCreated)); err != nil {
				return
			}
			if rc.Flush() != nil {
				return
			}
		}
	}))
	e.t.Cleanup(srv.Close)
	e.addAccount(&scheduler.Account{ID: id, Priority: priority, BaseURL: srv.URL + "/v1"})
	return done
}

// TestFaultRepeatedBootstrap: an upstream that sends response.created
// forever, before any output, is a broken attempt once the held events
// pass their bound: the turn moves to the next account before anything
// reached the client, and the looping stream is cut.
func TestFaultRepeatedBootstrap(t *testing.T) {
	t.Run("failover", func(t *testing.T) {
		e := newEnv(t)
		done := e.addLoopAccount("loop", 0)
		e.addAccount(&scheduler.Account{ID: "good", Priority: 1})
		r := e.do(streamReq)
		if r.status != 200 || r.lastType() != "response.completed" || strings.Contains(string(r.body), "resp_raw1") {
			t.Fatalf("status %d, events %v", r.status, r.types())
		}
		if countType(r, "response.created") != 1 {
			t.Fatalf("events %v", r.types())
		}
		if recs := e.sink.all(); len(recs) != 1 || recs[0].AccountID != "good" || recs[0].Attempts != 2 {
			t.Fatalf("records %+v", recs)
		}
		relaytestenv.WaitClosed(t, "the looping upstream to be cut", done)
		if !strings.Contains(e.logs.String(), "too many events before any output") {
			t.Fatalf("the cause was not logged:\n%s", e.logs.String())
		}
	})
	t.Run("no other account", func(t *testing.T) {
		e := newEnv(t)
		done := e.addLoopAccount("loop", 0)
		r := e.do(streamReq)
		if r.status != 502 || r.events != nil {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		if typ, msg, _, _ := apiErr(t, r.body); typ != "upstream_error" || msg != "Upstream request failed" {
			t.Fatalf("error %q %q", typ, msg)
		}
		if recs := e.sink.all(); len(recs) != 1 || recs[0].Status != billing.StatusUpstreamError {
			t.Fatalf("records %+v", recs)
		}
		relaytestenv.WaitClosed(t, "the looping upstream to be cut", done)
	})
}

// addJSONAccount adds an account whose upstream answers every request with
// 200 application/json and body.
func (e *env) addJSONAccount(id string, priority int, body string) {
	e.t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, body)
	}))
	e.t.Cleanup(srv.Close)
	e.addAccount(&scheduler.Account{ID: id, Priority: priority, BaseURL: srv.URL + "/v1"})
}

// jsonAnswer is a completed non-streaming answer padded to n bytes.
func jsonAnswer(n int) string {
	head := `{"id":"resp_big","object":"response","status":"completed","model":"gpt-test","usage":{"input_tokens":3,"output_tokens":1,"total_tokens":4},"pad":"`
	return head + strings.Repeat("x", n-len(head)-2) + `"}`
}

// TestFaultJSONAnswerTooLarge: a non-streaming answer over MaxEventBytes
// is an upstream failure: the turn moves to the next account, or with no
// account left is a 502; an answer of exactly the limit is relayed.
func TestFaultJSONAnswerTooLarge(t *testing.T) {
	const limit = 4096
	t.Run("failover", func(t *testing.T) {
		e := newEnv(t)
		e.h.MaxEventBytes = limit
		e.addJSONAccount("big", 0, jsonAnswer(limit+1))
		e.addAccount(&scheduler.Account{ID: "good", Priority: 1})
		r := e.do(textReq)
		if r.status != 200 || strings.Contains(string(r.body), "resp_big") || !strings.Contains(string(r.body), `"object":"response"`) {
			t.Fatalf("status %d: %.300s", r.status, r.body)
		}
		if recs := e.sink.all(); len(recs) != 1 || recs[0].AccountID != "good" || recs[0].Attempts != 2 {
			t.Fatalf("records %+v", recs)
		}
		if !strings.Contains(e.logs.String(), "larger than MaxEventBytes") {
			t.Fatalf("the cause was not logged:\n%s", e.logs.String())
		}
	})
	t.Run("no other account", func(t *testing.T) {
		e := newEnv(t)
		e.h.MaxEventBytes = limit
		e.addJSONAccount("big", 0, jsonAnswer(limit+1))
		r := e.do(textReq)
		if r.status != 502 || strings.Contains(string(r.body), "resp_big") {
			t.Fatalf("status %d: %.300s", r.status, r.body)
		}
		if typ, _, _, _ := apiErr(t, r.body); typ != "upstream_error" {
			t.Fatalf("type %q", typ)
		}
		if recs := e.sink.all(); len(recs) != 1 || recs[0].Status != billing.StatusUpstreamError {
			t.Fatalf("records %+v", recs)
		}
	})
	t.Run("at the limit", func(t *testing.T) {
		e := newEnv(t)
		e.h.MaxEventBytes = limit
		e.addJSONAccount("big", 0, jsonAnswer(limit))
		r := e.do(textReq)
		if r.status != 200 || len(r.body) != limit {
			t.Fatalf("status %d, %d bytes: %.300s", r.status, len(r.body), r.body)
		}
	})
}
