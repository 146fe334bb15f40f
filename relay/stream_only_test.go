package relay_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/relaykit/responsesrelay/scheduler"
	"github.com/tidwall/gjson"
)

// terminalResponse is the object a hand-written stream's terminal event
// carries, spaced and ordered as no encoder would write it: the client's
// JSON answer must be these bytes exactly.
const terminalResponse = `{ "id":"resp_so1","object":"response","created_at":1,"status":"completed","model":"gpt-test",` +
	`"output":[{"type":"message","id":"msg_1","status":"completed","role":"assistant","content":[{"type":"output_text","text":"streamed only","annotations":[]}]}],` +
	`"usage":{"input_tokens":7,"input_tokens_details":{"cached_tokens":2},"output_tokens":3,"output_tokens_details":{"reasoning_tokens":1},"total_tokens":10}  }`

// streamOnlyUpstream answers only stream:true, with a fixed stream.
func streamOnlyUpstream(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if gjson.GetBytes(body, "stream").Type != gjson.True {
			w.WriteHeader(400)
			io.WriteString(w, `{"error":{"message":"stream must be true","type":"invalid_request_error","param":"stream","code":null}}`)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_so1\",\"status\":\"in_progress\",\"output\":[]}}\n\n")
		io.WriteString(w, "data: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"streamed only\"}\n\n")
		io.WriteString(w, "data: {\"type\":\"response.completed\",\"sequence_number\":2,\"response\":"+terminalResponse+"}\n\n")
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestStreamOnlyAssembled: a JSON client on a stream-only account gets
// the terminal event's response byte for byte, and its usage record.
func TestStreamOnlyAssembled(t *testing.T) {
	e := newEnv(t)
	up := streamOnlyUpstream(t)
	e.addAccount(&scheduler.Account{ID: "so", BaseURL: up.URL, StreamOnly: true})
	r := e.do(textReq)
	if r.status != 200 || string(r.body) != terminalResponse || !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
		t.Fatalf("status %d %q:\n%s\nwant\n%s", r.status, r.header.Get("Content-Type"), r.body, terminalResponse)
	}
	recs := e.sink.all()
	if len(recs) != 1 || recs[0].Status != billing.StatusCompleted || recs[0].Stream || recs[0].InputTokens != 7 ||
		recs[0].CachedInputTokens != 2 || recs[0].OutputTokens != 3 || recs[0].ReasoningTokens != 1 || recs[0].ResponseID != "resp_so1" {
		t.Fatalf("records %+v", recs)
	}
}

// TestStreamOnlyFake: the fake's stream-only mode refuses JSON, and the
// relay serves a JSON client through the stream on both wire APIs.
func TestStreamOnlyFake(t *testing.T) {
	for _, wire := range []string{"", "chat"} {
		t.Run("wire="+wire, func(t *testing.T) {
			e := newEnv(t)
			e.addAccount(&scheduler.Account{ID: "so", WireAPI: wire, StreamOnly: true})
			e.up.SetStreamOnly("so", true)
			r := e.do(textReq)
			if r.status != 200 || gjson.GetBytes(r.body, "status").Str != "completed" ||
				!strings.Contains(gjson.GetBytes(r.body, "output").Raw, "Echo: hello there") {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			q := e.lastRequest("so")
			if gjson.GetBytes(q.Body, "stream").Type != gjson.True {
				t.Fatalf("upstream got %s", q.Body)
			}
			if recs := e.sink.all(); len(recs) != 1 || recs[0].OutputTokens == 0 || recs[0].Status != billing.StatusCompleted {
				t.Fatalf("records %+v", recs)
			}

			// Without StreamOnly on the account, the fake's 400 reaches
			// the client: the mode is what makes the account usable.
			e2 := newEnv(t)
			e2.addAccount(&scheduler.Account{ID: "so", WireAPI: wire})
			e2.up.SetStreamOnly("so", true)
			if r := e2.do(textReq); r.status != 400 || !strings.Contains(string(r.body), "stream") {
				t.Fatalf("without StreamOnly: %d %s", r.status, r.body)
			}
		})
	}
}

// TestStreamOnlyFailover: an in-band refusal on the stream-only account
// moves the JSON client's turn to the next account, whose JSON answer the
// client gets.
func TestStreamOnlyFailover(t *testing.T) {
	e := newEnv(t)
	e.addAccount(&scheduler.Account{ID: "so", Priority: 0, StreamOnly: true})
	e.addAccount(&scheduler.Account{ID: "plain", Priority: 1})
	e.up.Script("so", relaytest.Step{End: "refused server_is_overloaded"})
	r := e.do(textReq)
	if r.status != 200 || gjson.GetBytes(r.body, "status").Str != "completed" {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if q := e.lastRequest("plain"); gjson.GetBytes(q.Body, "stream").Exists() {
		t.Fatalf("the plain account got %s", q.Body)
	}
	if recs := e.sink.all(); len(recs) != 1 || recs[0].Attempts != 2 || recs[0].AccountID != "plain" {
		t.Fatalf("records %+v", recs)
	}
}

// TestStreamOnlyBroken: a stream that breaks after output answers the
// JSON client with the failed response the relay ends such streams with,
// and records upstream_error.
func TestStreamOnlyBroken(t *testing.T) {
	e := newEnv(t)
	e.addAccount(&scheduler.Account{ID: "so", StreamOnly: true})
	e.up.Script("so", relaytest.Step{After: 5, Cut: true})
	r := e.do(textReq)
	if r.status != 200 || gjson.GetBytes(r.body, "status").Str != "failed" || gjson.GetBytes(r.body, "error.code").Str != "upstream_error" {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if recs := e.sink.all(); len(recs) != 1 || recs[0].Status != billing.StatusUpstreamError {
		t.Fatalf("records %+v", recs)
	}
}

// TestStreamOnlyClientGone: the client leaves while the assembled stream
// is paused; the relay drains the upstream and records client_gone with
// the full usage, and the env's cleanup finds every slot free and no
// goroutine left.
func TestStreamOnlyClientGone(t *testing.T) {
	e := newEnv(t)
	e.addAccount(&scheduler.Account{ID: "so", StreamOnly: true})
	resume := make(chan struct{})
	e.up.Script("so", relaytest.Step{After: 3, Hold: resume})
	cancel, done := e.abandonable(textReq)
	e.WaitInFlight("so", 1)
	cancel()
	<-done
	e.waitGone(1)
	close(resume)
	waitUntil(t, "the usage record", func() bool { return len(e.sink.all()) == 1 })
	rec, served := e.sink.all()[0], e.up.Served()
	if rec.Status != billing.StatusClientGone || served[0].Status != "completed" {
		t.Fatalf("record %+v, served %+v", rec, served[0])
	}
	checkUsage(t, rec, served[0].Usage)
}
