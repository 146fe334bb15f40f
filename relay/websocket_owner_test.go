package relay_test

import (
	"testing"
)

// asKey makes the next dial authenticate as API key id.
func (e *wsEnv) asKey(id string) {
	e.Mu.Lock()
	e.subj.APIKeyID = id
	e.Mu.Unlock()
}

// notFoundFrame is the error frame for an unknown previous_response_id.
func notFoundFrame(id string) string {
	return `{"type":"error","status":400,"error":{"message":"Previous response with id '` + id +
		`' not found.","type":"invalid_request_error","param":"previous_response_id","code":"previous_response_not_found"}}`
}

// testAnotherKeysResponse: key B, with a connection already pinned to the
// only account (the one holding A's response), sends A's response id:
// it gets the not-found error frame, nothing goes upstream, and its
// connection serves on. A chains on.
func testAnotherKeysResponse(t *testing.T, ws bool) {
	e := newWSEnv(t, ws, "a")
	e.asKey("kA")
	a := e.dial()
	prev := a.completedTurn(``)

	e.asKey("kB")
	b := e.dial()
	b.send(create(``)) // pins B's connection to a
	if got := b.recvTurn(); typeOf(last(got)) != "response.completed" {
		t.Fatalf("B's own turn: %v", got)
	}
	before := len(e.up.Requests())
	for _, extra := range []string{``, `,"store":false`} {
		b.send(create(`,"previous_response_id":"` + prev + `"` + extra))
		got := b.recvTurn()
		if len(got) != 1 || got[0] != notFoundFrame(prev) {
			t.Fatalf("B chains A's response: %v\nwant %s", got, notFoundFrame(prev))
		}
	}
	if n := len(e.up.Requests()); n != before {
		t.Fatalf("%d requests went upstream for B's refused turns", n-before)
	}
	b.send(create(``))
	if got := b.recvTurn(); typeOf(last(got)) != "response.completed" {
		t.Fatalf("B's connection after the refusal: %v", got)
	}

	a.send(create(`,"previous_response_id":"` + prev + `"`))
	if got := a.recvTurn(); typeOf(last(got)) != "response.completed" {
		t.Fatalf("A chains its own response: %v", got)
	}
	waitUntil(t, "slots released while the connections stay open", func() bool {
		return e.lim.InFlight("user:"+"u1") == 0 && schedInFlight(e.sched, "a") == 0
	})
}

func TestAnotherKeysResponsePinnedSocket(t *testing.T) { testAnotherKeysResponse(t, true) }

func TestAnotherKeysResponseBridge(t *testing.T) { testAnotherKeysResponse(t, false) }
