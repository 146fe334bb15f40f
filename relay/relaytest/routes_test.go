package relaytest_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/relaykit/responsesrelay/relay/relaytest"
)

// do sends method to the account's base URL + path with the test key and
// returns the status and body.
func do(t *testing.T, s *relaytest.Server, method, account, path, body string) (int, gjson.Result) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, s.BaseURL(account)+path, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testKey)
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if !gjson.ValidBytes(b) {
		t.Fatalf("%s %s: invalid JSON %q", method, path, b)
	}
	return resp.StatusCode, gjson.Parse(strings.TrimSpace(string(b)))
}

// create posts a non-streaming create and returns the response object.
func create(t *testing.T, s *relaytest.Server, account, body string) gjson.Result {
	t.Helper()
	code, r := do(t, s, http.MethodPost, account, "/responses", body)
	if code != 200 {
		t.Fatalf("create: %d %s", code, r.Raw)
	}
	return r
}

const notFoundShape = `{"error":{"message":"Response with id 'ID' not found.","type":"invalid_request_error","param":null,"code":null}}`

func checkNotFound(t *testing.T, code int, r gjson.Result, id string) {
	t.Helper()
	if want := strings.Replace(notFoundShape, "ID", id, 1); code != 404 || r.Raw != want {
		t.Errorf("got %d %s, want 404 %s", code, r.Raw, want)
	}
}

func TestRetrieve(t *testing.T) {
	s := newServer(t)
	r := create(t, s, "a", `{"model":"gpt-5","input":"hello there"}`)
	id := r.Get("id").String()
	code, got := do(t, s, http.MethodGet, "a", "/responses/"+id, "")
	if code != 200 || got.Raw != r.Raw {
		t.Errorf("retrieve: %d\n%s\nwant\n%s", code, got.Raw, r.Raw)
	}
	code, got = do(t, s, http.MethodGet, "b", "/responses/"+id, "")
	checkNotFound(t, code, got, id)
	code, got = do(t, s, http.MethodGet, "a", "/responses/resp_nope", "")
	checkNotFound(t, code, got, "resp_nope")

	// store:false is not kept.
	r = create(t, s, "a", `{"model":"gpt-5","store":false,"input":"x"}`)
	code, got = do(t, s, http.MethodGet, "a", "/responses/"+r.Get("id").String(), "")
	checkNotFound(t, code, got, r.Get("id").String())
}

func TestRoutesNeedKey(t *testing.T) {
	s := newServer(t)
	for _, p := range []string{"/responses/resp_x", "/responses/resp_x/input_items", "/models", "/models/gpt-5"} {
		resp, err := s.Client().Get(s.BaseURL("a") + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Errorf("%s without key: %d", p, resp.StatusCode)
		}
	}
	for _, p := range []string{"/responses/resp_x/cancel", "/responses/input_tokens", "/responses/compact"} {
		resp, err := s.Client().Post(s.BaseURL("a")+p, "application/json", strings.NewReader(`{"model":"gpt-5"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Errorf("%s without key: %d", p, resp.StatusCode)
		}
	}
	code, r := do(t, s, http.MethodPut, "a", "/responses/resp_x", "")
	if code != 405 {
		t.Errorf("PUT: %d %s", code, r.Raw)
	}
	code, r = do(t, s, http.MethodGet, "a", "/responses/resp_x/other", "")
	if code != 404 || r.Get("error.message").String() != "Invalid URL (GET /a/v1/responses/resp_x/other)" {
		t.Errorf("unknown route: %d %s", code, r.Raw)
	}
}

func TestDelete(t *testing.T) {
	s := newServer(t)
	id := create(t, s, "", `{"model":"gpt-5","input":"hello"}`).Get("id").String()
	code, r := do(t, s, http.MethodDelete, "b", "/responses/"+id, "")
	checkNotFound(t, code, r, id)
	code, r = do(t, s, http.MethodDelete, "", "/responses/"+id, "")
	if want := `{"id":"` + id + `","object":"response","deleted":true}`; code != 200 || r.Raw != want {
		t.Errorf("delete: %d %s", code, r.Raw)
	}
	code, r = do(t, s, http.MethodGet, "", "/responses/"+id, "")
	checkNotFound(t, code, r, id)
	code, r = do(t, s, http.MethodDelete, "", "/responses/"+id, "")
	checkNotFound(t, code, r, id)
	code, r = do(t, s, http.MethodPost, "", "/responses", `{"model":"gpt-5","input":"again","previous_response_id":"`+id+`"}`)
	if code != 400 || r.Get("error.code").String() != "previous_response_not_found" {
		t.Errorf("chain to deleted: %d %s", code, r.Raw)
	}
	sv := s.Served()
	if got := sv[1]; got.Account != "b" || got.ResponseID != id || got.Status != "error" || got.HTTPStatus != 404 {
		t.Errorf("served: %+v", got)
	}
	rq := s.Requests()
	if got := rq[2]; got.Method != http.MethodDelete || got.Path != "/v1/responses/"+id {
		t.Errorf("received: %+v", got)
	}
}

func TestInputItems(t *testing.T) {
	s := newServer(t)
	id := create(t, s, "a", `{"model":"gpt-5","input":"hello there"}`).Get("id").String()
	code, r := do(t, s, http.MethodGet, "a", "/responses/"+id+"/input_items", "")
	items := r.Get("data").Array()
	if code != 200 || r.Get("object").String() != "list" || len(items) != 1 || r.Get("has_more").Bool() {
		t.Fatalf("%d %s", code, r.Raw)
	}
	it := items[0]
	if !strings.HasPrefix(it.Get("id").String(), "msg_") || it.Get("type").String() != "message" ||
		it.Get("role").String() != "user" || it.Get("content").Raw != `[{"type":"input_text","text":"hello there"}]` {
		t.Errorf("item: %s", it.Raw)
	}
	if r.Get("first_id").String() != it.Get("id").String() || r.Get("last_id").String() != it.Get("id").String() {
		t.Errorf("ids: %s", r.Raw)
	}
	// Stable ids.
	_, again := do(t, s, http.MethodGet, "a", "/responses/"+id+"/input_items", "")
	if again.Raw != r.Raw {
		t.Errorf("second listing differs:\n%s\n%s", again.Raw, r.Raw)
	}
	code, r = do(t, s, http.MethodGet, "b", "/responses/"+id+"/input_items", "")
	checkNotFound(t, code, r, id)

	body := `{"model":"gpt-5","input":[
		{"role":"developer","content":"be brief"},
		{"type":"message","id":"msg_keep","role":"user","content":"one"},
		{"type":"function_call","call_id":"call_1","name":"f","arguments":"{}"},
		{"type":"function_call_output","call_id":"call_1","output":"ok"},
		{"role":"user","content":[{"type":"input_text","text":"two"}]}]}`
	id = create(t, s, "a", body).Get("id").String()
	ids := func(r gjson.Result) string {
		var out []string
		for _, it := range r.Get("data").Array() {
			out = append(out, it.Get("type").String()+":"+it.Get("content.0.text").String())
		}
		return strings.Join(out, " ")
	}
	_, asc := do(t, s, http.MethodGet, "a", "/responses/"+id+"/input_items?order=asc", "")
	if got := ids(asc); got != "message:be brief message:one function_call: function_call_output: message:two" {
		t.Errorf("asc: %s", got)
	}
	if got := asc.Get("data.1.id").String(); got != "msg_keep" {
		t.Errorf("kept id: %s", got)
	}
	if got := asc.Get("data.2.id").String(); !strings.HasPrefix(got, "fc_") || asc.Get("data.2.call_id").String() != "call_1" {
		t.Errorf("function call item: %s", asc.Get("data.2").Raw)
	}
	_, desc := do(t, s, http.MethodGet, "a", "/responses/"+id+"/input_items?limit=2", "")
	if got := ids(desc); got != "message:two function_call_output:" || !desc.Get("has_more").Bool() {
		t.Errorf("desc limit 2: %s %s", got, desc.Raw)
	}
	_, next := do(t, s, http.MethodGet, "a", "/responses/"+id+"/input_items?limit=2&after="+desc.Get("last_id").String(), "")
	if got := ids(next); got != "function_call: message:one" || !next.Get("has_more").Bool() {
		t.Errorf("page 2: %s", got)
	}
	_, end := do(t, s, http.MethodGet, "a", "/responses/"+id+"/input_items?order=asc&after=msg_keep&limit=100", "")
	if got := ids(end); got != "function_call: function_call_output: message:two" || end.Get("has_more").Bool() {
		t.Errorf("after msg_keep: %s", got)
	}
	for _, q := range []string{"limit=0", "limit=101", "limit=x", "order=up"} {
		code, r := do(t, s, http.MethodGet, "a", "/responses/"+id+"/input_items?"+q, "")
		if code != 400 || r.Get("error.param").String() != strings.Split(q, "=")[0] {
			t.Errorf("%s: %d %s", q, code, r.Raw)
		}
	}
}

func TestModels(t *testing.T) {
	s := newServer(t)
	code, r := do(t, s, http.MethodGet, "a", "/models", "")
	if want := `{"object":"list","data":[{"id":"gpt-test","object":"model","created":1700000000,"owned_by":"relaytest"},{"id":"gpt-5","object":"model","created":1700000000,"owned_by":"relaytest"}]}`; code != 200 || r.Raw != want {
		t.Errorf("list: %d %s", code, r.Raw)
	}
	code, r = do(t, s, http.MethodGet, "", "/models/gpt-5", "")
	if code != 200 || r.Raw != `{"id":"gpt-5","object":"model","created":1700000000,"owned_by":"relaytest"}` {
		t.Errorf("get: %d %s", code, r.Raw)
	}
	code, r = do(t, s, http.MethodGet, "", "/models/nope", "")
	if want := `{"error":{"message":"The model 'nope' does not exist","type":"invalid_request_error","param":null,"code":"model_not_found"}}`; code != 404 || r.Raw != want {
		t.Errorf("unknown: %d %s", code, r.Raw)
	}
}
