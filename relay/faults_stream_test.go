package relay_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/relaykit/responsesrelay/scheduler"
	"github.com/tidwall/gjson"
)

// Events of a short, well-formed turn, for a raw upstream that writes
// framing the fake cannot produce.
const (
	rawCreated   = `{"type":"response.created","sequence_number":0,"response":{"id":"resp_raw1","object":"response","status":"in_progress","model":"gpt-test","usage":null}}`
	rawDelta     = `{"type":"response.output_text.delta","sequence_number":1,"item_id":"msg_raw1","output_index":0,"content_index":0,"delta":"Hi"}`
	rawCompleted = `{"type":"response.completed","sequence_number":2,"response":{"id":"resp_raw1","object":"response","status":"completed","model":"gpt-test","usage":{"input_tokens":3,"output_tokens":1,"total_tokens":4}}}`
)

func sseFrame(typ, data string) string { return "event: " + typ + "\ndata: " + data + "\n\n" }

// addRawAccount adds an account whose upstream answers every request with
// 200 text/event-stream and the given bytes.
func (e *env) addRawAccount(id string, priority int, body string) {
	e.addRawAccountHeader(id, priority, nil, body)
}

// addRawAccountHeader is addRawAccount with extra response headers.
func (e *env) addRawAccountHeader(id string, priority int, hdr http.Header, body string) {
	e.t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for k, vs := range hdr {
			w.Header()[k] = vs
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		fmt.Fprint(w, body)
	}))
	e.t.Cleanup(srv.Close)
	e.addAccount(&scheduler.Account{ID: id, Priority: priority, BaseURL: srv.URL + "/v1"})
}

// TestFaultFramingTolerated: lines a spec-following reader skips (a line
// with no colon, an empty data line, comments, unknown fields) do not
// disturb the turn.
func TestFaultFramingTolerated(t *testing.T) {
	e := newEnv(t)
	e.addRawAccount("raw", 0, sseFrame("response.created", rawCreated)+
		"this line has no colon\n\n"+
		"data:\n\n"+
		": a comment\nid: 7\nretry: 100\n\n"+
		sseFrame("response.output_text.delta", rawDelta)+
		sseFrame("response.completed", rawCompleted))
	r := e.do(streamReq)
	if strings.Join(r.types(), ",") != "response.created,response.output_text.delta,response.completed" {
		t.Fatalf("events %v", r.types())
	}
	recs := e.sink.all()
	if len(recs) != 1 || recs[0].Status != billing.StatusCompleted || recs[0].InputTokens != 3 || recs[0].ResponseID != "resp_raw1" {
		t.Fatalf("records %+v", recs)
	}
}

// TestFaultMalformedEvent: an event whose data is not a JSON object with a
// type is never forwarded. Before any output the turn moves to another
// account; after output the stream ends with one response.failed.
func TestFaultMalformedEvent(t *testing.T) {
	for name, bad := range map[string]string{
		"cut json":    `{"type":"response.output_text.delta","delta":"x`,
		"not json":    `this is not json`,
		"no type":     `{"sequence_number":1,"delta":"x"}`,
		"json string": `"just a json string"`,
	} {
		t.Run(name+"/before output", func(t *testing.T) {
			e := newEnv(t)
			e.addRawAccount("raw", 0, sseFrame("response.created", rawCreated)+"data: "+bad+"\n\n"+sseFrame("response.completed", rawCompleted))
			e.addAccount(&scheduler.Account{ID: "good", Priority: 1})
			r := e.do(streamReq)
			if r.status != 200 || r.lastType() != "response.completed" || strings.Contains(string(r.body), bad) || strings.Contains(string(r.body), "resp_raw1") {
				t.Fatalf("status %d, body %s", r.status, r.body)
			}
			if recs := e.sink.all(); len(recs) != 1 || recs[0].AccountID != "good" || recs[0].Attempts != 2 {
				t.Fatalf("records %+v", recs)
			}
		})
		t.Run(name+"/after output", func(t *testing.T) {
			e := newEnv(t)
			e.addRawAccount("raw", 0, sseFrame("response.created", rawCreated)+sseFrame("response.output_text.delta", rawDelta)+
				"data: "+bad+"\n\n"+sseFrame("response.completed", rawCompleted))
			e.addAccount(&scheduler.Account{ID: "good", Priority: 1})
			r := e.do(streamReq)
			if strings.Join(r.types(), ",") != "response.created,response.output_text.delta,response.failed" || strings.Contains(string(r.body), bad) {
				t.Fatalf("events %v: %s", r.types(), r.body)
			}
			last := r.events[2].Data
			if gjson.GetBytes(last, "response.error.code").String() != "upstream_error" || gjson.GetBytes(last, "sequence_number").Int() != 2 ||
				gjson.GetBytes(last, "response.id").String() != "resp_raw1" {
				t.Fatalf("failed event %s", last)
			}
			if recs := e.sink.all(); len(recs) != 1 || recs[0].AccountID != "raw" || recs[0].Status != billing.StatusUpstreamError {
				t.Fatalf("records %+v", recs)
			}
			if n := len(e.up.Requests()); n != 0 {
				t.Fatalf("failed over after output: %d requests to the good account", n)
			}
		})
	}
}

// TestFaultEventTooLarge: an event over MaxEventBytes is an upstream
// failure by the normal rules: failover before output, one
// response.failed after.
func TestFaultEventTooLarge(t *testing.T) {
	t.Run("before output", func(t *testing.T) {
		e := newEnv(t)
		e.h.MaxEventBytes = 4096
		big := `{"type":"response.created","sequence_number":0,"response":{"id":"resp_big","status":"in_progress","pad":"` + strings.Repeat("x", 8192) + `"}}`
		e.addRawAccount("raw", 0, sseFrame("response.created", big)+sseFrame("response.completed", rawCompleted))
		e.addAccount(&scheduler.Account{ID: "good", Priority: 1})
		r := e.do(streamReq)
		if r.status != 200 || r.lastType() != "response.completed" || strings.Contains(string(r.body), "resp_big") {
			t.Fatalf("status %d, events %v", r.status, r.types())
		}
		if recs := e.sink.all(); len(recs) != 1 || recs[0].AccountID != "good" || recs[0].Attempts != 2 {
			t.Fatalf("records %+v", recs)
		}
	})
	t.Run("before output, no other account", func(t *testing.T) {
		e := newEnv(t)
		e.h.MaxEventBytes = 4096
		e.addRawAccount("raw", 0, "data: "+strings.Repeat("x", 8192)+"\n\n")
		r := e.do(streamReq)
		if r.status != 502 {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		if _, msg, _, _ := apiErr(t, r.body); msg != "Upstream request failed" {
			t.Fatalf("message %q", msg)
		}
		if recs := e.sink.all(); len(recs) != 1 || recs[0].Status != billing.StatusUpstreamError {
			t.Fatalf("records %+v", recs)
		}
	})
	t.Run("after output", func(t *testing.T) {
		e := newEnv(t, "a", "b")
		e.h.MaxEventBytes = 4096
		e.up.SetDefault("a", relaytest.Step{EventPadding: 8192})
		e.up.SetDefault("b", relaytest.Step{EventPadding: 8192})
		r := e.do(streamReq)
		if r.lastType() != "response.failed" || countType(r, "response.output_text.delta") != 0 || countType(r, "response.output_item.added") != 1 {
			t.Fatalf("events %v", r.types())
		}
		if code := gjson.GetBytes(r.events[len(r.events)-1].Data, "response.error.code").String(); code != "upstream_error" {
			t.Fatalf("code %q", code)
		}
		if recs := e.sink.all(); len(recs) != 1 || recs[0].Status != billing.StatusUpstreamError || recs[0].Attempts != 1 {
			t.Fatalf("records %+v", recs)
		}
	})
}

// TestFaultFramingVariants: CRLF line ends, data split over several lines
// and comment blocks reach the client as the same events in the relay's
// own framing, with the same usage.
func TestFaultFramingVariants(t *testing.T) {
	e := newEnv(t, "a")
	plain := e.do(streamReq)
	for name, step := range map[string]relaytest.Step{"crlf": {Events: "crlf"}, "multi-line data": {Events: "multiline"},
		"comments": {Events: "comments"}, "all three": {Events: "crlf multiline comments"}} {
		t.Run(name, func(t *testing.T) {
			e.up.Script("a", step)
			r := e.do(streamReq)
			if strings.Join(r.types(), ",") != strings.Join(plain.types(), ",") {
				t.Fatalf("events %v, want %v", r.types(), plain.types())
			}
			if strings.Contains(string(r.body), "\r") || strings.Contains(string(r.body), ": ping") {
				t.Fatalf("upstream framing reached the client")
			}
			for _, ev := range r.events {
				if !gjson.ValidBytes(ev.Data) || strings.ContainsAny(string(ev.Data), "\r\n") {
					t.Fatalf("event %s not one line of JSON: %q", ev.Type, ev.Data)
				}
			}
			recs, served := e.sink.all(), e.up.Served()
			checkUsage(t, recs[len(recs)-1], served[len(served)-1].Usage)
		})
	}
}

// TestFaultNotJSON: a 2xx answer to a non-streaming request that is not a
// JSON object (an event stream, a proxy's page) is an upstream failure:
// failed over, and never relayed unread.
func TestFaultNotJSON(t *testing.T) {
	e := newEnv(t)
	e.addRawAccount("raw", 0, sseFrame("response.created", rawCreated)+sseFrame("response.completed", rawCompleted))
	e.addAccount(&scheduler.Account{ID: "good", Priority: 1})
	r := e.do(textReq)
	if r.status != 200 || gjson.GetBytes(r.body, "object").String() != "response" {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if recs := e.sink.all(); len(recs) != 1 || recs[0].AccountID != "good" || recs[0].Attempts != 2 {
		t.Fatalf("records %+v", recs)
	}
}
