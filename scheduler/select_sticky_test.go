package scheduler

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestSelectPreviousResponseBinding(t *testing.T) {
	f := newFixture(t, acct("a"), acct("b"), acct("c"))
	ctx := context.Background()
	q := Request{Group: "g", Model: "gpt-5", APIKeyID: "k"}
	if err := f.s.Bind(ctx, q, "b", "resp_1"); err != nil {
		t.Fatal(err)
	}
	q.PreviousResponseID = "resp_1"
	for range 30 {
		sel, err := f.s.Select(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		sel.Release()
		if sel.Account.ID != "b" || sel.Layer != LayerPreviousResponse {
			t.Fatalf("got %s via %s, want b via previous_response", sel.Account.ID, sel.Layer)
		}
	}
	q.PreviousResponseID = "resp_unknown"
	sel, err := f.s.Select(ctx, q)
	if err != nil || sel.Layer != LayerBalanced {
		t.Fatalf("unknown id: %+v, %v", sel, err)
	}
	sel.Release()

	// The binding lives StickyTTL after Bind.
	f.clock.Advance(time.Hour - time.Second)
	q.PreviousResponseID = "resp_1"
	if sel, _ := f.s.Select(ctx, q); sel.Layer != LayerPreviousResponse {
		t.Fatalf("binding gone before its TTL: %s", sel.Layer)
	} else {
		sel.Release()
	}
	f.clock.Advance(time.Second)
	if sel, _ := f.s.Select(ctx, q); sel.Layer != LayerBalanced {
		t.Fatalf("binding outlived its TTL: %s", sel.Layer)
	} else {
		sel.Release()
	}
}

func TestSelectSessionBinding(t *testing.T) {
	f := newFixture(t, acct("a"), acct("b"), acct("c"))
	ctx := context.Background()
	q := Request{Group: "g", Model: "gpt-5", APIKeyID: "k1", SessionKey: "sess-1"}
	if err := f.s.Bind(ctx, q, "c", ""); err != nil {
		t.Fatal(err)
	}
	sel, err := f.s.Select(ctx, q)
	if err != nil || sel.Account.ID != "c" || sel.Layer != LayerSession {
		t.Fatalf("got %+v, %v", sel, err)
	}
	sel.Release()

	// Another tenant with the same session key does not share the binding.
	other := q
	other.APIKeyID = "k2"
	if sel, _ := f.s.Select(ctx, other); sel.Layer != LayerBalanced {
		t.Fatalf("tenant k2 used k1's binding")
	} else {
		sel.Release()
	}

	// Binding on every served turn keeps the session alive past one TTL.
	for range 3 {
		f.clock.Advance(50 * time.Minute)
		sel, err := f.s.Select(ctx, q)
		if err != nil || sel.Layer != LayerSession {
			t.Fatalf("session expired while in use: %+v, %v", sel, err)
		}
		if err := f.s.Bind(ctx, q, sel.Account.ID, ""); err != nil {
			t.Fatal(err)
		}
		sel.Release()
	}
	f.clock.Advance(time.Hour)
	if sel, _ := f.s.Select(ctx, q); sel.Layer != LayerBalanced {
		t.Fatalf("idle session outlived its TTL")
	} else {
		sel.Release()
	}
}

func TestSessionKeysDoNotCollide(t *testing.T) {
	if sessionKey("a:b", "c") == sessionKey("a", "b:c") {
		t.Fatal("API key a:b with session c shares a key with API key a with session b:c")
	}
	if sessionKey("", "x") == sessionKey("x", "") {
		t.Fatal("empty parts collide")
	}
}

func TestPreviousResponseBeforeSession(t *testing.T) {
	f := newFixture(t, acct("a"), acct("b"), acct("c"))
	ctx := context.Background()
	q := Request{Group: "g", Model: "gpt-5", APIKeyID: "k", SessionKey: "s"}
	if err := f.s.Bind(ctx, q, "c", ""); err != nil {
		t.Fatal(err)
	}
	if err := f.s.Bind(ctx, Request{APIKeyID: "k"}, "b", "resp_1"); err != nil {
		t.Fatal(err)
	}
	q.PreviousResponseID = "resp_1"
	sel, err := f.s.Select(ctx, q)
	if err != nil || sel.Account.ID != "b" || sel.Layer != LayerPreviousResponse {
		t.Fatalf("got %+v, %v", sel, err)
	}
	sel.Release()

	// b cooling: the session's account takes over.
	f.s.Observe("b", status(429, "", "Retry-After", "7"))
	sel, err = f.s.Select(ctx, q)
	if err != nil || sel.Account.ID != "c" || sel.Layer != LayerSession {
		t.Fatalf("got %+v, %v", sel, err)
	}
	sel.Release()
}

// TestStickyEscape covers every reason to leave a bound account, on both
// sticky layers.
func TestStickyEscape(t *testing.T) {
	tests := []struct {
		name   string
		reason string // in the debug log
		setup  func(t *testing.T, f *fixture, q *Request)
	}{
		{"cooling down", "cooling down", func(t *testing.T, f *fixture, q *Request) {
			f.s.Observe("a", status(429, "", "Retry-After", "7"))
		}},
		{"failing", "failing", func(t *testing.T, f *fixture, q *Request) {
			// Failures with successes between: an error rate of 0.544 and
			// never three in a row, so no cooldown hides the condition.
			for _, ok := range []bool{false, false, true, false, false} {
				o := status(502, "")
				if ok {
					o = Outcome{Kind: OutcomeSuccess}
				}
				f.s.Observe("a", o)
			}
			if !f.s.CoolingUntil("a").IsZero() {
				t.Fatal("setup: a is cooling down")
			}
		}},
		{"slow", "slow", func(t *testing.T, f *fixture, q *Request) {
			f.s.Observe("a", Outcome{Kind: OutcomeSuccess, TTFT: 16 * time.Second})
		}},
		{"full", "full", func(t *testing.T, f *fixture, q *Request) {
			hold := *q
			hold.PreviousResponseID, hold.SessionKey = "", ""
			hold.Exclude = []string{"b", "c"}
			sel, err := f.s.Select(context.Background(), hold)
			if err != nil || sel.Account.ID != "a" {
				t.Fatalf("setup: %+v, %v", sel, err)
			}
			t.Cleanup(sel.Release)
		}},
		{"excluded", "failed earlier", func(t *testing.T, f *fixture, q *Request) {
			q.Exclude = []string{"a"}
		}},
		{"gone from the group", "not in the group", func(t *testing.T, f *fixture, q *Request) {
			if !f.pool.Remove("g", "a") {
				t.Fatal("setup: a not removed")
			}
		}},
		{"no longer serves the model", "does not serve", func(t *testing.T, f *fixture, q *Request) {
			f.pool.Add("g", &Account{ID: "a", Concurrency: 1, Models: []string{"gpt-4o"}})
		}},
		{"no websocket", "WebSocket", func(t *testing.T, f *fixture, q *Request) {
			q.WebSocket = true
		}},
	}
	for _, layer := range []Layer{LayerPreviousResponse, LayerSession} {
		for _, tt := range tests {
			t.Run(string(layer)+"/"+tt.name, func(t *testing.T) {
				f := newFixture(t,
					&Account{ID: "a", Concurrency: 1},
					&Account{ID: "b", Concurrency: 1, WebSocket: true},
					&Account{ID: "c", Concurrency: 1, WebSocket: true})
				ctx := context.Background()
				q := Request{Group: "g", Model: "gpt-5", APIKeyID: "k"}
				if layer == LayerPreviousResponse {
					q.PreviousResponseID = "resp_1"
					if err := f.s.Bind(ctx, q, "a", "resp_1"); err != nil {
						t.Fatal(err)
					}
				} else {
					q.SessionKey = "s"
					if err := f.s.Bind(ctx, q, "a", ""); err != nil {
						t.Fatal(err)
					}
				}
				// The binding works before the condition.
				if sel, err := f.s.Select(ctx, q); err != nil || sel.Account.ID != "a" || sel.Layer != layer {
					t.Fatalf("before: %+v, %v", sel, err)
				} else {
					sel.Release()
				}

				tt.setup(t, f, &q)
				for range 20 {
					sel, err := f.s.Select(ctx, q)
					if err != nil {
						t.Fatal(err)
					}
					sel.Release()
					if sel.Account.ID == "a" || sel.Layer != LayerBalanced {
						t.Fatalf("got %s via %s, want another account via balanced", sel.Account.ID, sel.Layer)
					}
				}
				if !strings.Contains(f.logs.String(), tt.reason) {
					t.Fatalf("debug log does not say %q: %s", tt.reason, f.logs.String())
				}
			})
		}
	}
}

func TestStickyBindingMoves(t *testing.T) {
	f := newFixture(t, acct("a"), acct("b"))
	ctx := context.Background()
	q := Request{Group: "g", Model: "gpt-5", APIKeyID: "k", SessionKey: "s"}
	if err := f.s.Bind(ctx, q, "a", ""); err != nil {
		t.Fatal(err)
	}
	f.s.Observe("a", status(401, "{}"))
	sel, err := f.s.Select(ctx, q)
	if err != nil || sel.Account.ID != "b" {
		t.Fatalf("got %+v, %v", sel, err)
	}
	if err := f.s.Bind(ctx, q, sel.Account.ID, "resp_2"); err != nil {
		t.Fatal(err)
	}
	sel.Release()

	// a is back, but the session now lives on b.
	f.s.Recover("a")
	for range 20 {
		sel, err := f.s.Select(ctx, q)
		if err != nil || sel.Account.ID != "b" || sel.Layer != LayerSession {
			t.Fatalf("got %+v, %v", sel, err)
		}
		sel.Release()
	}
}
