package relay_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/relaykit/responsesrelay/internal/relaytestenv"
	"github.com/relaykit/responsesrelay/relay"
	"github.com/relaykit/responsesrelay/scheduler"
	"github.com/tidwall/gjson"
)

// get sends a request without a body to the relay's path with the key.
func (e *env) call(method, path, key string) result {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return result{status: resp.StatusCode, header: resp.Header, body: b}
}

// TestModels: GET /v1/models lists the exact names the caller's group can
// reach (Models without wildcards, ModelMap keys), sorted, once each; a
// hook may change the list; GET /v1/models/{model} answers one of them or
// OpenAI's 404.
func TestModels(t *testing.T) {
	e := newEnv(t)
	e.addAccount(&scheduler.Account{ID: "a", Models: []string{"gpt-5", "gpt-4*", "o3"}})
	e.addAccount(&scheduler.Account{ID: "b", Models: []string{"o3"}, ModelMap: map[string]string{"o3": "o3-2025", "fast": "gpt-5-mini"}})
	r := e.call(http.MethodGet, "/v1/models", relaytestenv.ClientKey)
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	var ids []string
	gjson.GetBytes(r.body, "data").ForEach(func(_, m gjson.Result) bool {
		if m.Get("object").Str != "model" || !m.Get("owned_by").Exists() || !m.Get("created").Exists() {
			t.Fatalf("model object %s", m.Raw)
		}
		ids = append(ids, m.Get("id").Str)
		return true
	})
	// "fast" is a map key b does not serve (its Models leave it out).
	if got := strings.Join(ids, ","); gjson.GetBytes(r.body, "object").Str != "list" || got != "gpt-5,o3" {
		t.Fatalf("models %s: %s", got, r.body)
	}
	if r := e.call(http.MethodGet, "/v1/models/o3", relaytestenv.ClientKey); r.status != 200 || gjson.GetBytes(r.body, "id").Str != "o3" {
		t.Fatalf("one model: %d %s", r.status, r.body)
	}
	r = e.call(http.MethodGet, "/v1/models/gpt-4o", relaytestenv.ClientKey)
	if _, _, _, code := apiErr(t, r.body); r.status != http.StatusNotFound || code != "model_not_found" {
		t.Fatalf("unknown model: %d %s", r.status, r.body)
	}
	e.h.Models = func(_ context.Context, s *relay.Subject, names []string) []string {
		return append(names, "gpt-4o-"+s.GroupID)
	}
	if r := e.call(http.MethodGet, "/v1/models/gpt-4o-g", relaytestenv.ClientKey); r.status != 200 {
		t.Fatalf("a name the hook added: %d %s", r.status, r.body)
	}
	if r := e.call(http.MethodGet, "/v1/models", "wrong"); r.status != http.StatusUnauthorized {
		t.Fatalf("no key: %d", r.status)
	}
	if n := len(e.up.Requests()); n != 0 {
		t.Fatalf("%d upstream requests for a model list", n)
	}
}

// TestStoredResponseOfAnotherKey: on every route of a stored response,
// another API key and an id the relay never bound get the upstream's 404,
// and no upstream request is made.
func TestStoredResponseOfAnotherKey(t *testing.T) {
	e := newEnv(t, "a")
	e.h.Authenticate = byKey(e)
	r := e.do(textReq, "Authorization", "Bearer rk-A")
	id := jsonField(r.body, "id")
	before := len(e.up.Requests())
	for _, c := range []struct{ method, path string }{
		{http.MethodGet, "/v1/responses/" + id},
		{http.MethodGet, "/v1/responses/" + id + "?stream=true"},
		{http.MethodDelete, "/v1/responses/" + id},
		{http.MethodGet, "/v1/responses/" + id + "/input_items"},
		{http.MethodPost, "/v1/responses/" + id + "/cancel"},
	} {
		for _, who := range []struct{ key, id string }{{"rk-B", id}, {"rk-A", "resp_unknown"}} {
			path := strings.Replace(c.path, id, who.id, 1)
			r := e.call(c.method, path, who.key)
			want := `{"error":{"message":"Response with id '` + who.id + `' not found.","type":"invalid_request_error","param":null,"code":null}}`
			if r.status != http.StatusNotFound || strings.TrimSpace(string(r.body)) != want {
				t.Fatalf("%s %s as %s: %d %s", c.method, path, who.key, r.status, r.body)
			}
		}
	}
	if n := len(e.up.Requests()) - before; n != 0 {
		t.Fatalf("%d upstream requests on behalf of another key or an unknown id", n)
	}
	if r := e.call(http.MethodPut, "/v1/responses/"+id, "rk-A"); r.status != http.StatusMethodNotAllowed {
		t.Fatalf("PUT: %d", r.status)
	}
	if r := e.call(http.MethodGet, "/v1/chat/completions", "rk-A"); r.status != http.StatusNotFound {
		t.Fatalf("another path: %d", r.status)
	}
}
