package relay_test

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestValidation drives every validation row of the contract through HTTP:
// each is answered before any slot or upstream contact.
func TestValidation(t *testing.T) {
	e := newEnv(t, "a")
	cases := []struct {
		name, body    string
		status        int
		typ, msg, prm string
	}{
		{"empty body", ``, 400, "invalid_request_error", "Request body is empty", ""},
		{"whitespace body", "  \n", 400, "invalid_request_error", "Request body is empty", ""},
		{"not json", `{"model":`, 400, "invalid_request_error", "Failed to parse request body", ""},
		{"json array", `[1,2]`, 400, "invalid_request_error", "Failed to parse request body", ""},
		{"model missing", `{"input":"hi"}`, 400, "invalid_request_error", "model is required", "model"},
		{"model empty", `{"model":"","input":"hi"}`, 400, "invalid_request_error", "model is required", "model"},
		{"model not string", `{"model":5,"input":"hi"}`, 400, "invalid_request_error", "model is required", "model"},
		{"stream string", `{"model":"m","stream":"true"}`, 400, "invalid_request_error", "invalid stream field type", "stream"},
		{"stream number", `{"model":"m","stream":1}`, 400, "invalid_request_error", "invalid stream field type", "stream"},
	}
	for _, p := range []string{"msg_", "message_", "item_", "chatcmpl_", "fc_", "rs_"} {
		cases = append(cases, struct {
			name, body    string
			status        int
			typ, msg, prm string
		}{"previous id " + p, `{"model":"m","previous_response_id":"` + p + `abc"}`, 400, "invalid_request_error",
			"previous_response_id must be a response.id (resp_*), not a message id", "previous_response_id"})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.do(c.body)
			if r.status != c.status {
				t.Fatalf("status %d, want %d: %s", r.status, c.status, r.body)
			}
			typ, msg, prm, _ := apiErr(t, r.body)
			if typ != c.typ || msg != c.msg || prm != c.prm {
				t.Fatalf("got (%q, %q, %q), want (%q, %q, %q)", typ, msg, prm, c.typ, c.msg, c.prm)
			}
		})
	}
	if n := len(e.up.Requests()); n != 0 {
		t.Fatalf("invalid requests reached the upstream %d times", n)
	}
}

func TestValidationToolOutputs(t *testing.T) {
	e := newEnv(t, "a")
	noCallID := `{"model":"m","input":[{"type":"function_call_output","output":"42"}]}`
	orphan := `{"model":"m","input":[{"type":"function_call_output","call_id":"call_x","output":"42"}]}`
	for name, body := range map[string]string{"no call_id": noCallID, "orphan call_id": orphan} {
		r := e.do(body)
		if r.status != 400 {
			t.Fatalf("%s: status %d: %s", name, r.status, r.body)
		}
		_, msg, prm, _ := apiErr(t, r.body)
		if prm != "input" || !strings.Contains(msg, "previous_response_id") || !strings.Contains(msg, "call_id") || !strings.Contains(msg, "store=true") {
			t.Fatalf("%s: message gives no guidance: %q", name, msg)
		}
	}
	if n := len(e.up.Requests()); n != 0 {
		t.Fatalf("rejected requests reached the upstream %d times", n)
	}
	// The accepted shapes pass validation and reach the upstream.
	matched := `{"model":"m","input":[{"type":"function_call","call_id":"call_x","name":"f","arguments":"{}"},{"type":"function_call_output","call_id":"call_x","output":"42"}]}`
	if r := e.do(matched); r.status != 200 {
		t.Fatalf("matched call: status %d: %s", r.status, r.body)
	}
	ref := `{"model":"m","input":[{"type":"item_reference","id":"fc_1"},{"type":"function_call_output","call_id":"call_x","output":"42"}]}`
	r := e.do(ref)
	if r.status == 400 {
		if _, msg, _, _ := apiErr(t, r.body); strings.Contains(msg, "store=true") {
			t.Fatalf("item_reference body was rejected by the relay: %s", r.body)
		}
	}
	if n := len(e.up.Requests()); n != 2 {
		t.Fatalf("upstream saw %d requests, want 2", n)
	}
}

func TestUnauthenticated(t *testing.T) {
	e := newEnv(t, "a")
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/responses", strings.NewReader(textReq))
	req.Header.Set("Authorization", "Bearer wrong")
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	typ, msg, _, _ := apiErr(t, body)
	if typ != "authentication_error" || msg != "Invalid API key" {
		t.Fatalf("got %q %q", typ, msg)
	}
}

// chunkedReader hides its length so the client sends Transfer-Encoding:
// chunked.
type chunkedReader struct{ r io.Reader }

func (c chunkedReader) Read(p []byte) (int, error) { return c.r.Read(p) }

func TestBodyTooLarge(t *testing.T) {
	e := newEnv(t, "a")
	e.h.MaxBodyBytes = 1 << 20
	big := `{"model":"m","input":"` + strings.Repeat("x", 1<<20) + `"}`
	t.Run("content-length", func(t *testing.T) {
		r := e.do(big)
		if r.status != 413 {
			t.Fatalf("status %d", r.status)
		}
		typ, _, _, _ := apiErr(t, r.body)
		if typ != "invalid_request_error" {
			t.Fatalf("type %q", typ)
		}
	})
	t.Run("chunked", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/responses", chunkedReader{strings.NewReader(big)})
		req.Header.Set("Authorization", "Bearer rk-client")
		resp, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 413 || req.ContentLength != 0 && req.ContentLength != -1 {
			t.Fatalf("status %d (content length %d)", resp.StatusCode, req.ContentLength)
		}
		apiErr(t, body)
	})
	t.Run("lying content-length", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/responses", bytes.NewReader([]byte(big)))
		req.ContentLength = 100 // the server reads past it only if it ignores the header; it must cap anyway
		req.Header.Set("Authorization", "Bearer rk-client")
		resp, err := e.srv.Client().Do(req)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				t.Fatalf("a truncated body was relayed: %s", body)
			}
		}
	})
	if n := len(e.up.Requests()); n != 0 {
		t.Fatalf("oversized bodies reached the upstream %d times", n)
	}
}

// TestDefaultBodyLimit sends 32 MiB + 1 chunked: the default cap answers
// 413 before any upstream contact.
func TestDefaultBodyLimit(t *testing.T) {
	e := newEnv(t, "a")
	body := io.MultiReader(strings.NewReader(`{"model":"m","input":"`), io.LimitReader(repeatReader('x'), 32<<20), strings.NewReader(`"}`))
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/responses", chunkedReader{body})
	req.Header.Set("Authorization", "Bearer rk-client")
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if n := len(e.up.Requests()); n != 0 {
		t.Fatalf("upstream contacted %d times", n)
	}
}

type repeatReader byte

func (r repeatReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r)
	}
	return len(p), nil
}
