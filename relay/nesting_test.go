package relay_test

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/relaykit/responsesrelay/internal/relaytestenv"
	"github.com/relaykit/responsesrelay/relay"
	"github.com/relaykit/responsesrelay/relay/relaytest"
)

// million is how deep the hostile documents nest: gjson would take one
// stack frame per level to validate them.
const million = 1_000_000

const tooDeepMsg = "JSON nested deeper than 512 levels"

// deepJSON is an object whose key holds an array nested n deep, closed
// when closed is set (an attack need not close it).
func deepJSON(prefix string, n int, closed bool) []byte {
	b := append([]byte(prefix), bytes.Repeat([]byte("["), n)...)
	if closed {
		b = append(b, bytes.Repeat([]byte("]"), n)...)
		b = append(b, '}')
	}
	return b
}

func gzipped(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func (e *env) postRaw(body []byte, enc string) (int, []byte) {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/responses", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer rk-client")
	req.Header.Set("Content-Type", "application/json")
	if enc != "" {
		req.Header.Set("Content-Encoding", enc)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, b
}

// TestDeepBody: a body nested a million deep, plain or gzip, closed or
// not, is a 400 before any recursive parser or the upstream sees it, and
// the handler goes on serving. Brackets inside a string are text.
func TestDeepBody(t *testing.T) {
	e := newEnv(t, "a")
	for _, closed := range []bool{true, false} {
		deep := deepJSON(`{"model":"gpt-test","input":`, million, closed)
		for _, enc := range []string{"", "gzip"} {
			body := deep
			if enc == "gzip" {
				body = gzipped(t, deep)
			}
			status, b := e.postRaw(body, enc)
			if status != 400 {
				t.Fatalf("closed=%v enc=%q: status %d: %.200s", closed, enc, status, b)
			}
			if typ, msg, _, _ := apiErr(t, b); typ != "invalid_request_error" || msg != tooDeepMsg {
				t.Fatalf("closed=%v enc=%q: %q %q", closed, enc, typ, msg)
			}
			if r := e.do(textReq); r.status != 200 {
				t.Fatalf("after a deep body: status %d: %s", r.status, r.body)
			}
		}
	}
	inString := `{"model":"gpt-test","input":"` + strings.Repeat("[", million) + `\"{{{"}`
	if status, b := e.postRaw([]byte(inString), ""); status != 200 {
		t.Fatalf("brackets in a string: status %d: %.200s", status, b)
	}
	// Exactly the limit passes validation.
	atLimit := deepJSON(`{"model":"gpt-test","metadata":{"x":`, 510, false)
	atLimit = append(append(atLimit, bytes.Repeat([]byte("]"), 510)...), `},"input":"hi"}`...)
	if status, b := e.postRaw(atLimit, ""); status != 200 {
		t.Fatalf("512 levels: status %d: %.200s", status, b)
	}
	if n := len(e.up.Requests()); n != 6 {
		t.Fatalf("%d upstream requests, want the 6 valid ones", n)
	}
}

// TestDuplicateKeys: a body repeating a key the relay reads or rewrites
// is a 400 naming it (an escaped spelling counts), before the upstream;
// other repeated keys are the upstream's to judge.
func TestDuplicateKeys(t *testing.T) {
	e := newEnv(t, "a")
	values := map[string][2]string{
		"model": {`"gpt-test"`, `"gpt-other"`}, "stream": {`false`, `true`}, "store": {`true`, `false`},
		"previous_response_id": {`null`, `"resp_x"`}, "input": {`"hi"`, `"bye"`}, "background": {`false`, `true`},
		"conversation": {`null`, `"conv_1"`}, "prompt_cache_key": {`"a"`, `"b"`}, "type": {`"response.create"`, `"x"`},
	}
	for key, v := range values {
		for _, spelling := range []string{key, `\u00` + hex(key[0]) + key[1:]} {
			body := `{"model":"gpt-test","input":"hi","` + spelling + `":` + v[1] + `,"` + key + `":` + v[0] + `}`
			if key == "model" || key == "input" {
				body = `{"model":"gpt-test","input":"hi","` + spelling + `":` + v[1] + `}`
			}
			r := e.do(body)
			if r.status != 400 {
				t.Fatalf("%s: status %d: %s", body, r.status, r.body)
			}
			typ, msg, param, _ := apiErr(t, r.body)
			if typ != "invalid_request_error" || param != key || !strings.Contains(msg, `duplicate key "`+key+`"`) {
				t.Fatalf("%s: %q %q param %q", body, typ, msg, param)
			}
		}
	}
	if n := len(e.up.Requests()); n != 0 {
		t.Fatalf("duplicate keys reached the upstream %d times", n)
	}
	// A repeated key inside a value, or one the relay does not read, is
	// not the relay's business.
	for _, body := range []string{
		`{"model":"gpt-test","input":[{"type":"message","role":"user","content":"hi","type":"message"}]}`,
		`{"model":"gpt-test","input":"hi","metadata":{"a":"1"},"metadata":{"a":"2"}}`,
	} {
		if r := e.do(body); r.status == 400 {
			if _, msg, _, _ := apiErr(t, r.body); strings.Contains(msg, "duplicate") {
				t.Fatalf("%s: %s", body, msg)
			}
		}
	}
}

func hex(c byte) string {
	const digits = "0123456789abcdef"
	return string([]byte{digits[c>>4], digits[c&0xf]})
}

// deepAnswer is an upstream answer nested a million deep: a non-streaming
// JSON body, or an SSE stream whose first output event is (the rest of
// the stream is sound, so only the depth makes it a broken answer).
func deepAnswer(stream bool) relaytest.Step {
	if !stream {
		return relaytest.Step{Status: 200, Body: string(deepJSON(`{"id":"resp_deep","object":"response","status":"completed","output":`, million, true))}
	}
	ev := deepJSON(`{"type":"response.output_text.delta","sequence_number":1,"item_id":"msg_1","delta":`, million, true)
	return relaytest.Step{Status: 200, Header: http.Header{"Content-Type": {"text/event-stream"}},
		Body: "data: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_deep\",\"status\":\"in_progress\"}}\n\n" +
			"data: " + string(ev) + "\n\n" +
			"data: {\"type\":\"response.completed\",\"sequence_number\":2,\"response\":{\"id\":\"resp_deep\",\"status\":\"completed\"}}\n\n"}
}

// TestDeepUpstreamAnswer: an upstream answering JSON, or an SSE event,
// nested a million deep is a broken attempt: the turn fails over and the
// client gets the next account's answer; with no account left it gets a
// 502, never the deep document.
func TestDeepUpstreamAnswer(t *testing.T) {
	for _, stream := range []bool{false, true} {
		name := "json"
		body := textReq
		if stream {
			name, body = "sse", streamReq
		}
		t.Run(name+"/failover", func(t *testing.T) {
			e := newPriorityEnv(t)
			e.h.MaxEventBytes = 4 << 20
			e.up.Script("bad", deepAnswer(stream))
			r := e.do(body)
			if r.status != 200 {
				t.Fatalf("status %d: %.300s", r.status, r.body)
			}
			if stream && r.lastType() != "response.completed" {
				t.Fatalf("events %v", r.types())
			}
			if bytes.Contains(r.body, []byte("resp_deep")) || bytes.Contains(r.body, []byte("[[[[")) {
				t.Fatalf("the deep answer reached the client: %.300s", r.body)
			}
			if got := accountsOf(e.up.Requests()); len(got) != 2 || got[0] != "bad" || got[1] != "good" {
				t.Fatalf("attempts went to %v", got)
			}
		})
		t.Run(name+"/one account", func(t *testing.T) {
			e := newEnv(t, "a")
			e.h.MaxEventBytes = 4 << 20
			e.up.Script("a", deepAnswer(stream))
			r := e.do(body)
			if bytes.Contains(r.body, []byte("resp_deep")) || bytes.Contains(r.body, []byte("[[[[")) {
				t.Fatalf("the deep answer reached the client: %.300s", r.body)
			}
			if !stream {
				if r.status != 502 {
					t.Fatalf("status %d: %.300s", r.status, r.body)
				}
				if typ, _, _, _ := apiErr(t, r.body); typ != "upstream_error" {
					t.Fatalf("type %q", typ)
				}
			} else if r.status != 502 && (r.lastType() != "error" || !strings.Contains(string(r.body), `"status":502`)) {
				t.Fatalf("status %d, events %v: %.300s", r.status, r.types(), r.body)
			}
			if r := e.do(textReq); r.status != 200 {
				t.Fatalf("after a deep answer: status %d", r.status)
			}
		})
	}
}

// TestDeepUpstreamAfterOutput: a deep event after output ends the stream
// with one response.failed, never forwarded.
func TestDeepUpstreamAfterOutput(t *testing.T) {
	e := newEnv(t, "a")
	e.h.MaxEventBytes = 4 << 20
	ev := deepJSON(`{"type":"response.output_text.delta","sequence_number":2,"delta":`, million, true)
	e.up.Script("a", relaytest.Step{Status: 200, Header: http.Header{"Content-Type": {"text/event-stream"}},
		Body: "data: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\"}}\n\n" +
			"data: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"delta\":\"ok\"}\n\n" +
			"data: " + string(ev) + "\n\n"})
	r := e.do(streamReq)
	if r.status != 200 || r.lastType() != "response.failed" || countType(r, "response.failed") != 1 {
		t.Fatalf("status %d events %v", r.status, r.types())
	}
	if bytes.Contains(r.body, []byte("[[[[")) {
		t.Fatal("the deep event reached the client")
	}
}

// TestDeepUpstreamError: an upstream error body nested too deep is not
// passed to the client, as is or through a MapError hook that passes bodies on.
func TestDeepUpstreamError(t *testing.T) {
	e := newEnv(t, "a")
	e.h.MapError = func(ue *relay.UpstreamError) *relay.APIError {
		if ue.Status != 409 {
			return nil
		}
		return relaytestenv.PassUpstreamErrors(ue)
	}
	deep := string(deepJSON(`{"error":{"message":"deep","type":"invalid_request_error","x":`, 30_000, true)) + "}"
	for _, status := range []int{400, 409} {
		e.up.Script("a", relaytest.Step{Status: status, Body: deep})
		r := e.do(textReq)
		if r.status != status {
			t.Fatalf("status %d, want %d: %.200s", r.status, status, r.body)
		}
		if bytes.Contains(r.body, []byte("[[[[")) {
			t.Fatalf("%d: the deep error reached the client: %.200s", status, r.body)
		}
		apiErr(t, r.body)
	}
}
