package scheduler

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// refused asserts that Select refuses q with ErrResponseNotOwned and holds
// no slot afterwards.
func (f *fixture) refused(t *testing.T, q Request) {
	t.Helper()
	sel, err := f.s.Select(context.Background(), q)
	if sel != nil {
		sel.Release()
		t.Fatalf("key %q got response %s on %s via %s", q.APIKeyID, q.PreviousResponseID, sel.Account.ID, sel.Layer)
	}
	if !errors.Is(err, ErrResponseNotOwned) {
		t.Fatalf("key %q, response %s: err %v, want ErrResponseNotOwned", q.APIKeyID, q.PreviousResponseID, err)
	}
	accts, _ := f.pool.Accounts(context.Background(), "g")
	for _, a := range accts {
		if n := f.s.InFlight(a.ID); n != 0 {
			t.Fatalf("account %s holds %d slots after a refusal", a.ID, n)
		}
	}
}

func TestSelectRefusesAnotherKeysResponse(t *testing.T) {
	f, owner, other := ownedResponse(t)
	ctx := context.Background()
	f.refused(t, other)
	// Not through a pinned account either, even the one holding it.
	other.PreferAccount = "b"
	f.refused(t, other)
	// Nor through the owner's session key.
	other.PreferAccount, other.SessionKey = "", "s"
	f.refused(t, other)

	sel, err := f.s.Select(ctx, owner)
	if err != nil || sel.Account.ID != "b" || sel.Layer != LayerPreviousResponse {
		t.Fatalf("owner: %+v, %v", sel, err)
	}
	sel.Release()

	// The owner's next response is the owner's too.
	if err := f.s.Bind(ctx, owner, "b", "resp_2"); err != nil {
		t.Fatal(err)
	}
	other.PreviousResponseID = "resp_2"
	f.refused(t, other)

	// An id nobody bound is not refused: the upstream answers for it.
	other.PreviousResponseID = "resp_unknown"
	if id := f.pick(t, other); id == "" {
		t.Fatal("no account")
	}
}

// TestOwnerOutlivesStickiness: after StickyTTL the owner's turns are
// balanced like any other, another key is still refused until OwnerTTL.
func TestOwnerOutlivesStickiness(t *testing.T) {
	f, owner, other := ownedResponse(t)
	ctx := context.Background()

	f.clock.Advance(defaultStickyTTL)
	sel, err := f.s.Select(ctx, owner)
	if err != nil || sel.Layer != LayerBalanced {
		t.Fatalf("owner after StickyTTL: %+v, %v", sel, err)
	}
	sel.Release()
	f.refused(t, other)

	f.clock.Advance(defaultOwnerTTL - defaultStickyTTL - time.Second)
	f.refused(t, other)
	f.clock.Advance(time.Second)
	// The record is gone: the turn goes where Select sends it.
	if sel, err := f.s.Select(ctx, other); err != nil || sel.Layer != LayerBalanced {
		t.Fatalf("after OwnerTTL: %+v, %v", sel, err)
	} else {
		sel.Release()
	}
}

func TestOwnerTTLSetting(t *testing.T) {
	for _, tc := range []struct {
		name     string
		ttl      time.Duration
		refusing time.Duration // how long another key is refused
	}{
		{"shorter than stickiness", time.Minute, defaultStickyTTL},
		{"negative", -1, defaultStickyTTL},
		{"two days", 48 * time.Hour, 48 * time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, acct("a"), acct("b"))
			f.s.OwnerTTL = tc.ttl
			ctx := context.Background()
			q := Request{Group: "g", Model: "gpt-5", APIKeyID: "k1"}
			if err := f.s.Bind(ctx, q, "b", "resp_1"); err != nil {
				t.Fatal(err)
			}
			q.APIKeyID, q.PreviousResponseID = "k2", "resp_1"
			f.clock.Advance(tc.refusing - time.Millisecond)
			f.refused(t, q)
			f.clock.Advance(time.Millisecond)
			f.pick(t, q)
		})
	}
}

// TestOwnerEmptyAPIKeyID: "" is an owner like any other.
func TestOwnerEmptyAPIKeyID(t *testing.T) {
	f := newFixture(t, acct("a"), acct("b"), acct("c"))
	ctx := context.Background()
	anon := Request{Group: "g", Model: "gpt-5"}
	if err := f.s.Bind(ctx, anon, "c", "resp_anon"); err != nil {
		t.Fatal(err)
	}
	keyed := Request{Group: "g", Model: "gpt-5", APIKeyID: "k1"}
	if err := f.s.Bind(ctx, keyed, "a", "resp_keyed"); err != nil {
		t.Fatal(err)
	}
	anon.PreviousResponseID = "resp_anon"
	sel, err := f.s.Select(ctx, anon)
	if err != nil || sel.Account.ID != "c" || sel.Layer != LayerPreviousResponse {
		t.Fatalf("anonymous owner: %+v, %v", sel, err)
	}
	sel.Release()
	keyed.PreviousResponseID = "resp_anon"
	f.refused(t, keyed)
	anon.PreviousResponseID = "resp_keyed"
	f.refused(t, anon)
}

// TestOwnerUndecodableBinding: a value without an owner (written by an
// older version) or a corrupt one lets nobody in.
func TestOwnerUndecodableBinding(t *testing.T) {
	f := newFixture(t, acct("a"), acct("b"))
	ctx := context.Background()
	f.s.init()
	for _, v := range []string{"b", "o1:", "o1:99999999999999:2:k1", "o2:1:0:b", "o1:x:0:b"} {
		if err := f.s.store.Set(ctx, responseKey("resp_old"), v, time.Hour); err != nil {
			t.Fatal(err)
		}
		for _, key := range []string{"", "k1", "b"} {
			f.refused(t, Request{Group: "g", Model: "gpt-5", APIKeyID: key, PreviousResponseID: "resp_old"})
		}
	}
}

// TestOwnerStoreDown: without the store the turn is not refused (the
// upstream answers for itself) and the failure is logged.
func TestOwnerStoreDown(t *testing.T) {
	f := newFixture(t, acct("a"), acct("b"))
	f.s.Store = failingStore{err: errors.New("store down")}
	q := Request{Group: "g", Model: "gpt-5", APIKeyID: "k2", PreviousResponseID: "resp_1"}
	sel, err := f.s.Select(context.Background(), q)
	if err != nil || sel.Layer != LayerBalanced {
		t.Fatalf("%+v, %v", sel, err)
	}
	sel.Release()
	if !strings.Contains(f.logs.String(), "store down") {
		t.Fatalf("the store failure was not logged: %s", f.logs)
	}
}

func TestBindingEncoding(t *testing.T) {
	b := binding{until: 1700000000123, owner: "k:1", account: "acct:9"}
	v := encodeBinding(b)
	if v != "o1:1700000000123:3:k:1acct:9" {
		t.Fatalf("encoded %q", v)
	}
	if got, ok := decodeBinding(v); !ok || got != b {
		t.Fatalf("decoded %+v, %v", got, ok)
	}
	for _, bad := range []string{"", "acct", "o1:", "o1::0:a", "o1:01:0:a", "o1:1:01:ka", "o1:1:1:k", "o1:1:5:k",
		"o1:-1:0:a", "o1:+1:0:a", "o1:1:-1:a", "o1:1234567890123456789:0:a", "O1:1:0:a"} {
		if got, ok := decodeBinding(bad); ok {
			t.Errorf("%q decoded as %+v", bad, got)
		}
	}
}

// FuzzBindingEncoding: every binding survives a round trip, and any string
// either fails to decode or decodes to a binding that encodes back to it.
func FuzzBindingEncoding(f *testing.F) {
	f.Add(int64(1700000000123), "k1", "acct-a", "o1:1:2:k1a")
	f.Add(int64(0), "", "a", "acct-a")
	f.Add(int64(999999999999999999), "o1:5:1:x", ":", "o1:0:0:")
	f.Fuzz(func(t *testing.T, until int64, owner, account, raw string) {
		if until >= 0 && until < 1e18 && account != "" {
			b := binding{until: until, owner: owner, account: account}
			got, ok := decodeBinding(encodeBinding(b))
			if !ok || got != b {
				t.Fatalf("%+v came back as %+v, %v", b, got, ok)
			}
		}
		if b, ok := decodeBinding(raw); ok {
			if b.account == "" || b.until < 0 {
				t.Fatalf("%q decoded as %+v", raw, b)
			}
			if v := encodeBinding(b); v != raw {
				t.Fatalf("%q decoded as %+v, which encodes as %q", raw, b, v)
			}
		}
	})
}

// ownedResponse is a fixture where key k1 created resp_1 on account b, and
// requests continuing it as its owner and as another key (k2).
func ownedResponse(t *testing.T) (f *fixture, owner, other Request) {
	t.Helper()
	f = newFixture(t, acct("a"), acct("b"), acct("c"))
	owner = Request{Group: "g", Model: "gpt-5", APIKeyID: "k1"}
	if err := f.s.Bind(context.Background(), owner, "b", "resp_1"); err != nil {
		t.Fatal(err)
	}
	owner.PreviousResponseID = "resp_1"
	other = owner
	other.APIKeyID = "k2"
	return f, owner, other
}
