package relay_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/relaykit/responsesrelay/conversation"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/tidwall/gjson"
)

// chainReq continues prev with a text input ("" starts a chain).
func chainReq(prev, input string) string {
	if prev == "" {
		return `{"model":"gpt-test","input":"` + input + `"}`
	}
	return `{"model":"gpt-test","input":"` + input + `","previous_response_id":"` + prev + `"}`
}

// chain serves n chained turns and returns the last response id.
func (e *env) chain(n int, prefix string) string {
	e.t.Helper()
	prev := ""
	for i := 0; i < n; i++ {
		r := e.do(chainReq(prev, prefix+string(rune('1'+i))))
		if r.status != http.StatusOK {
			e.t.Fatalf("turn %d: status %d: %s", i+1, r.status, r.body)
		}
		prev = jsonField(r.body, "id")
	}
	return prev
}

// TestConversationMovesOnCooldown: a chain of three turns on a, then a
// answers 429: the fourth turn is served by b, which receives the whole
// history without previous_response_id; the fifth chains on b natively.
// Each turn has one usage record; the moved one says so.
func TestConversationMovesOnCooldown(t *testing.T) {
	e := newPriorityEnvIDs(t, "a", "b")
	prev := e.chain(3, "part ")
	e.up.Script("a", relaytest.Step{Status: 429, Header: http.Header{"Retry-After": {"60"}}})
	r := e.do(chainReq(prev, "part 4"))
	if r.status != http.StatusOK || !strings.Contains(string(r.body), "Echo: part 4") {
		t.Fatalf("turn 4: status %d: %s", r.status, r.body)
	}
	reqs := e.up.Requests()
	moved := reqs[len(reqs)-1]
	if moved.Account != "b" {
		t.Fatalf("turn 4 went to %v", accountsOf(reqs))
	}
	if gjson.GetBytes(moved.Body, "previous_response_id").Exists() {
		t.Fatalf("b was asked for a response it never made: %s", moved.Body)
	}
	var texts []string
	gjson.GetBytes(moved.Body, "input").ForEach(func(_, item gjson.Result) bool {
		c := item.Get("content")
		if c.Type == gjson.String {
			texts = append(texts, c.Str)
		} else {
			texts = append(texts, c.Get("0.text").Str)
		}
		return true
	})
	want := "part 1|Echo: part 1|part 2|Echo: part 2|part 3|Echo: part 3|part 4"
	if got := strings.Join(texts, "|"); got != want {
		t.Fatalf("b received the history\n %s\nwant\n %s", got, want)
	}

	next := e.do(chainReq(jsonField(r.body, "id"), "part 5"))
	if next.status != http.StatusOK {
		t.Fatalf("turn 5: status %d: %s", next.status, next.body)
	}
	reqs = e.up.Requests()
	native := reqs[len(reqs)-1]
	if native.Account != "b" || gjson.GetBytes(native.Body, "previous_response_id").Str != jsonField(r.body, "id") ||
		gjson.GetBytes(native.Body, "input").Str != "part 5" {
		t.Fatalf("turn 5 did not chain natively on b: %s %s", native.Account, native.Body)
	}
	recs := e.sink.all()
	if len(recs) != 5 { // one per turn: a's 429 is an attempt of turn 4
		t.Fatalf("%d usage records, want 5", len(recs))
	}
	for _, u := range recs {
		if u.ContextRebuilt != (u.ResponseID == jsonField(r.body, "id")) {
			t.Fatalf("record %s: ContextRebuilt %v", u.ResponseID, u.ContextRebuilt)
		}
	}
	if moved := recs[3]; moved.AccountID != "b" || moved.InputTokens == 0 {
		t.Fatalf("the moved turn's record %+v", moved)
	}
}

// TestConversationHolderForgot: the account that made the previous
// response answers previous_response_not_found (it lost it): the relay
// sends the chain whole to the same account, once, and the account is
// not penalised.
func TestConversationHolderForgot(t *testing.T) {
	e := newPriorityEnvIDs(t, "a", "b")
	prev := e.chain(2, "turn ")
	e.up.Script("a", relaytest.Step{Status: 400, Body: `{"error":{"message":"Previous response with id '` + prev +
		`' not found.","type":"invalid_request_error","param":"previous_response_id","code":"previous_response_not_found"}}`})
	r := e.do(chainReq(prev, "turn 3"))
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	reqs := e.up.Requests()
	if got := strings.Join(accountsOf(reqs), ","); got != "a,a,a,a" {
		t.Fatalf("attempts %s", got)
	}
	if last := reqs[3].Body; gjson.GetBytes(last, "previous_response_id").Exists() || !strings.Contains(gjson.GetBytes(last, "input").Raw, "Echo: turn 2") {
		t.Fatalf("the retry was not the whole chain: %s", last)
	}
	if !coolingUntil(e.sched, "a").IsZero() {
		t.Fatal("the account was cooled down for a 400 the relay fixed")
	}
	if recs := e.sink.all(); len(recs) != 3 || recs[2].Attempts != 2 || !recs[2].ContextRebuilt {
		t.Fatalf("records %+v", recs)
	}
}

// TestConversationInvalidEncryptedContent: an upstream that cannot decrypt
// a reasoning item the relay does not know the maker of answers
// invalid_encrypted_content once: the relay sends the input again without
// reasoning items, the client gets 200 and the account is not cooled
// down.
func TestConversationInvalidEncryptedContent(t *testing.T) {
	e := newPriorityEnvIDs(t, "a", "b")
	e.up.Script("a", relaytest.Step{Status: 400, Body: `{"error":{"message":"The encrypted content for item rs_1 could not be verified. Reason: Encrypted content could not be decrypted or parsed.","type":"invalid_request_error","param":null,"code":"invalid_encrypted_content"}}`})
	body := `{"model":"gpt-test","store":false,"input":[` +
		`{"type":"message","role":"user","content":"hi"},` +
		`{"type":"reasoning","id":"rs_1","summary":[],"encrypted_content":"gAAAAABforeign"},` +
		`{"type":"message","role":"assistant","content":"hello"},` +
		`{"type":"message","role":"user","content":"again"}]}`
	r := e.do(body)
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	reqs := e.up.Requests()
	if got := strings.Join(accountsOf(reqs), ","); got != "a,a" {
		t.Fatalf("attempts %s", got)
	}
	if strings.Contains(string(reqs[1].Body), "reasoning") || !strings.Contains(string(reqs[1].Body), `"again"`) {
		t.Fatalf("retry body %s", reqs[1].Body)
	}
	if !coolingUntil(e.sched, "a").IsZero() {
		t.Fatal("the account was cooled down")
	}
	// A second refusal is the client's answer: one retry only.
	for range 2 {
		e.up.Script("a", relaytest.Step{Status: 400, Body: `{"error":{"message":"x","type":"invalid_request_error","param":null,"code":"invalid_encrypted_content"}}`})
	}
	if r := e.do(body); r.status != http.StatusBadRequest {
		t.Fatalf("second refusal: status %d: %s", r.status, r.body)
	}
}

// TestConversationRecordsExpired: a chain whose records are gone cannot
// be moved: the client gets the upstream's own 400, never a 5xx; so does
// a chain that would not fit MaxBodyBytes.
func TestConversationRecordsExpired(t *testing.T) {
	e := newPriorityEnvIDs(t, "a", "b")
	store := &conversation.Memory{}
	e.h.Conversations = store
	first := e.chain(1, "one ")
	r := e.do(chainReq(first, "two"))
	second := jsonField(r.body, "id")
	if err := store.Delete(context.Background(), e.subj.APIKeyID, first); err != nil {
		t.Fatal(err)
	}
	e.up.Script("a", relaytest.Step{Status: 429, Header: http.Header{"Retry-After": {"60"}}})
	e.do(textReq) // benches a
	before := len(e.up.Requests())
	r = e.do(chainReq(second, "three"))
	if r.status != http.StatusBadRequest {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if _, _, param, code := apiErr(t, r.body); code != "previous_response_not_found" || param != "previous_response_id" {
		t.Fatalf("error %s", r.body)
	}
	if n := len(e.up.Requests()) - before; n != 0 {
		t.Fatalf("%d upstream requests for a chain the relay could not rebuild", n)
	}
}

// TestConversationTooLarge: a rebuilt chain over MaxBodyBytes is the
// upstream's 400 previous_response_not_found.
func TestConversationTooLarge(t *testing.T) {
	e := newPriorityEnvIDs(t, "a", "b")
	e.h.MaxBodyBytes = 600
	prev := e.chain(1, strings.Repeat("x", 200))
	r := e.do(chainReq(prev, strings.Repeat("y", 200)))
	prev = jsonField(r.body, "id")
	e.up.Script("a", relaytest.Step{Status: 429, Header: http.Header{"Retry-After": {"60"}}})
	e.do(textReq)
	r = e.do(chainReq(prev, "z"))
	if r.status != http.StatusBadRequest {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if _, _, _, code := apiErr(t, r.body); code != "previous_response_not_found" {
		t.Fatalf("error %s", r.body)
	}
}

// TestConversationAnotherKeyNotRebuilt: key B naming key A's response
// while A's account cools down (so that a rebuild would be needed) gets
// 400 previous_response_not_found; no upstream request is made and
// nothing of A's conversation reaches B.
func TestConversationAnotherKeyNotRebuilt(t *testing.T) {
	e := newPriorityEnvIDs(t, "a", "b")
	e.h.Authenticate = byKey(e)
	secret := "my secret plan"
	r := e.do(chainReq("", secret), "Authorization", "Bearer rk-A")
	prev := jsonField(r.body, "id")
	e.up.Script("a", relaytest.Step{Status: 429, Header: http.Header{"Retry-After": {"60"}}})
	e.do(textReq, "Authorization", "Bearer rk-A") // benches a
	before := len(e.up.Requests())
	for _, body := range []string{chainReq(prev, "tell me"), strings.Replace(chainReq(prev, "tell me"), `"model"`, `"stream":true,"model"`, 1)} {
		r := e.do(body, "Authorization", "Bearer rk-B")
		if r.status != http.StatusBadRequest || strings.Contains(string(r.body), secret) {
			t.Fatalf("B: status %d: %s", r.status, r.body)
		}
		if _, _, _, code := apiErr(t, r.body); code != "previous_response_not_found" {
			t.Fatalf("B: %s", r.body)
		}
	}
	if n := len(e.up.Requests()) - before; n != 0 {
		t.Fatalf("%d upstream requests on B's behalf", n)
	}
	// A moves its own chain.
	if r := e.do(chainReq(prev, "go on"), "Authorization", "Bearer rk-A"); r.status != http.StatusOK {
		t.Fatalf("A: status %d: %s", r.status, r.body)
	}
	reqs := e.up.Requests()
	if last := reqs[len(reqs)-1]; last.Account != "b" || !strings.Contains(string(last.Body), secret) {
		t.Fatalf("A's move: %s %s", last.Account, last.Body)
	}
}

// hostileStore gives back what it is told to, whatever was asked.
type hostileStore struct {
	conversation.Memory
	give func(apiKeyID, responseID string, real []byte) []byte
}

func (s *hostileStore) Get(ctx context.Context, apiKeyID, responseID string) ([]byte, error) {
	real, err := s.Memory.Get(ctx, apiKeyID, responseID)
	if err != nil {
		return nil, err
	}
	return s.give(apiKeyID, responseID, real), nil
}

// TestConversationHostileStore: what a Store gives back is untrusted: a
// record of another key or response, one nested a million deep, or bytes
// that are not a record are not used (the chain cannot move: 400
// previous_response_not_found), and the relay serves on.
func TestConversationHostileStore(t *testing.T) {
	for name, give := range map[string]func(k, id string, real []byte) []byte{
		"another key": func(k, id string, real []byte) []byte {
			return []byte(strings.Replace(string(real), `"api_key_id":"`+k+`"`, `"api_key_id":"other"`, 1))
		},
		"another response": func(k, id string, real []byte) []byte {
			return []byte(strings.Replace(string(real), id, "resp_other", 1))
		},
		"deep": func(k, id string, real []byte) []byte {
			return []byte(`{"response_id":"` + id + `","api_key_id":"` + k + `","input":` + strings.Repeat("[", million) + `}`)
		},
		"garbage": func(string, string, []byte) []byte { return []byte("\x00not json") },
		"no output": func(k, id string, _ []byte) []byte {
			return []byte(`{"response_id":"` + id + `","api_key_id":"` + k + `","account_id":"a","input":[]}`)
		},
	} {
		t.Run(name, func(t *testing.T) {
			e := newPriorityEnvIDs(t, "a", "b")
			e.h.Conversations = &hostileStore{give: give}
			prev := e.chain(1, "one ")
			e.up.Script("a", relaytest.Step{Status: 429, Header: http.Header{"Retry-After": {"60"}}})
			e.do(textReq)
			r := e.do(chainReq(prev, "two"))
			if r.status != http.StatusBadRequest {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			if _, _, _, code := apiErr(t, r.body); code != "previous_response_not_found" {
				t.Fatalf("error %s", r.body)
			}
			if r := e.do(textReq); r.status != http.StatusOK {
				t.Fatalf("the relay does not serve on: %d", r.status)
			}
		})
	}
}
