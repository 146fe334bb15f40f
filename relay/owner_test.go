package relay_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/relaykit/responsesrelay/relay"
	"github.com/tidwall/gjson"
)

// byKey authenticates "Bearer rk-<id>" as API key <id> of the env's user.
func byKey(e *env) func(*http.Request) (*relay.Subject, error) {
	return func(r *http.Request) (*relay.Subject, error) {
		id, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer rk-")
		if !ok {
			return nil, nil
		}
		s := relay.Subject{UserID: "u1", APIKeyID: id, GroupID: "g"}
		return &s, nil
	}
}

// TestPreviousResponseOfAnotherKey: key B that learned the id of a
// response key A created is answered 400 previous_response_not_found, as
// the upstream answers an unknown id, and nothing goes upstream; A chains
// on as before.
func TestPreviousResponseOfAnotherKey(t *testing.T) {
	e := newEnv(t, "a", "b", "c")
	e.h.Authenticate = byKey(e)
	rec := observed(e)
	r := e.do(textReq, "Authorization", "Bearer rk-A")
	if r.status != http.StatusOK {
		t.Fatalf("A creates: status %d: %s", r.status, r.body)
	}
	prev := gjson.GetBytes(r.body, "id").String()
	holder := e.up.Requests()[0].Account

	// What the upstream answers for an id it does not know.
	unknown := e.do(`{"model":"gpt-test","input":"x","previous_response_id":"resp_nobody"}`, "Authorization", "Bearer rk-A")
	if unknown.status != http.StatusBadRequest {
		t.Fatalf("unknown id: status %d: %s", unknown.status, unknown.body)
	}
	want := `{"error":{"message":"Previous response with id '` + prev + `' not found.","type":"invalid_request_error","param":"previous_response_id","code":"previous_response_not_found"}}`

	before := len(e.up.Requests())
	for _, body := range []string{
		`{"model":"gpt-test","input":"more","previous_response_id":"` + prev + `"}`,
		`{"model":"gpt-test","stream":true,"input":"more","previous_response_id":"` + prev + `"}`,
	} {
		r := e.do(body, "Authorization", "Bearer rk-B")
		if r.status != http.StatusBadRequest || string(r.body) != want {
			t.Fatalf("B chains A's response: status %d: %s\nwant 400 %s", r.status, r.body, want)
		}
	}
	if got := strings.TrimSpace(strings.ReplaceAll(string(unknown.body), "resp_nobody", prev)); got != want {
		t.Fatalf("the refusal differs from the upstream's answer to an unknown id:\nupstream %s\nrelay    %s", got, want)
	}
	if n := len(e.up.Requests()); n != before {
		t.Fatalf("%d requests went upstream for B's refused turns", n-before)
	}
	e.settle()
	rec.mu.Lock()
	w := rec.waits[len(rec.waits)-1]
	rec.mu.Unlock()
	if w.Kind != relay.SlotAccount || w.Outcome != relay.WaitNotOwned {
		t.Fatalf("observed wait %+v, want the account wait refused with %s", w, relay.WaitNotOwned)
	}

	r = e.do(`{"model":"gpt-test","stream":true,"input":"more","previous_response_id":"`+prev+`"}`, "Authorization", "Bearer rk-A")
	if r.lastType() != "response.completed" {
		t.Fatalf("A chains its own response: %d %s", r.status, r.body)
	}
	reqs := e.up.Requests()
	if last := reqs[len(reqs)-1]; last.Account != holder {
		t.Fatalf("A's chain went to %s, the response is on %s", last.Account, holder)
	}
	if !strings.Contains(e.logs.String(), "previous response of another API key refused") {
		t.Fatal("the refusal was not logged")
	}
}
