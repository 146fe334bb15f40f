package relaytest_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/relaykit/responsesrelay/relay/relaytest"
)

func TestInputTokens(t *testing.T) {
	s := newServer(t)
	body := `{"model":"gpt-5","instructions":"be brief","input":[{"role":"user","content":"one two three"}]}`
	code, r := do(t, s, http.MethodPost, "a", "/responses/input_tokens", body)
	if code != 200 || r.Raw != `{"object":"response.input_tokens","input_tokens":15}` {
		t.Fatalf("%d %s", code, r.Raw)
	}
	created := create(t, s, "a", body)
	if got := created.Get("usage.input_tokens").Int(); got != 15 {
		t.Errorf("create reports %d", got)
	}
	chained := `{"model":"gpt-5","previous_response_id":"` + created.Get("id").String() + `","input":"more"}`
	_, r = do(t, s, http.MethodPost, "a", "/responses/input_tokens", chained)
	if want := create(t, s, "a", chained).Get("usage.input_tokens").Int(); r.Get("input_tokens").Int() != want {
		t.Errorf("chained: %s, create reports %d", r.Raw, want)
	}
	code, r = do(t, s, http.MethodPost, "b", "/responses/input_tokens", chained)
	if code != 400 || r.Get("error.code").String() != "previous_response_not_found" {
		t.Errorf("other account: %d %s", code, r.Raw)
	}
	code, r = do(t, s, http.MethodPost, "a", "/responses/input_tokens", `{"input":"x"}`)
	if code != 400 || r.Get("error.param").String() != "model" {
		t.Errorf("no model: %d %s", code, r.Raw)
	}
}

func TestCompactV1(t *testing.T) {
	s := newServer(t)
	first := create(t, s, "a", `{"model":"gpt-5","input":"first question"}`)
	body := `{"model":"gpt-5","instructions":"x","previous_response_id":"` + first.Get("id").String() + `",
		"input":[{"role":"user","content":"second question"},{"role":"assistant","content":"an answer"}]}`
	code, r := do(t, s, http.MethodPost, "a", "/responses/compact", body)
	if code != 200 || r.Get("object").String() != "response.compaction" || !strings.HasPrefix(r.Get("id").String(), "resp_") {
		t.Fatalf("%d %s", code, r.Raw)
	}
	out := r.Get("output").Array()
	if len(out) != 3 || out[0].Raw != `{"type":"message","role":"user","content":[{"type":"input_text","text":"first question"}]}` ||
		out[1].Get("content.0.text").String() != "second question" || out[2].Get("type").String() != "compaction" ||
		!strings.HasPrefix(out[2].Get("id").String(), "cmp_") ||
		!strings.HasPrefix(out[2].Get("encrypted_content").String(), "gAAAAA") {
		t.Fatalf("output: %s", r.Get("output").Raw)
	}
	// 10 + 1 (instructions) + 4 words, plus the previous response's 12+5.
	if r.Get("usage.input_tokens").Int() != 32 || r.Get("usage.output_tokens").Int() != 5 {
		t.Errorf("usage: %s", r.Get("usage").Raw)
	}
	// The blob is bound to the account, as a compaction_trigger's is.
	next := `{"model":"gpt-5","store":false,"input":[` + out[0].Raw + `,` + out[1].Raw + `,` + out[2].Raw +
		`,{"role":"user","content":"go on"}]}`
	if code, r := do(t, s, http.MethodPost, "a", "/responses", next); code != 200 {
		t.Errorf("same account: %d %s", code, r.Raw)
	}
	if code, r := do(t, s, http.MethodPost, "b", "/responses", next); code != 400 || r.Get("error.code").String() != "invalid_encrypted_content" {
		t.Errorf("other account: %d %s", code, r.Raw)
	}
	if code, r := do(t, s, http.MethodPost, "b", "/responses/compact", body); code != 400 || r.Get("error.code").String() != "previous_response_not_found" {
		t.Errorf("compact on another account: %d %s", code, r.Raw)
	}
	if sv := s.Served(); sv[1].ResponseID != r.Get("id").String() || sv[1].Usage.Input != 32 || sv[1].Status != "completed" {
		t.Errorf("served: %+v", sv[1])
	}
}

// A Step answers any request to the account, so a script can make the
// compaction route missing, as on upstreams that do not serve it.
func TestCompactScripted404(t *testing.T) {
	s := newServer(t)
	s.Script("a", relaytest.Step{Status: 404, Body: `{"detail":"Not Found"}`})
	code, r := do(t, s, http.MethodPost, "a", "/responses/compact", `{"model":"gpt-5","input":"x"}`)
	if code != 404 || r.Raw != `{"detail":"Not Found"}` {
		t.Errorf("%d %s", code, r.Raw)
	}
	code, _ = do(t, s, http.MethodPost, "a", "/responses/compact", `{"model":"gpt-5","input":"x"}`)
	if code != 200 {
		t.Errorf("next request: %d", code)
	}
	rq := s.Requests()
	if len(rq) != 2 || rq[0].Method != http.MethodPost || rq[0].Path != "/a/v1/responses/compact" {
		t.Errorf("received: %+v", rq)
	}
}
