package scheduler

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/concurrency"
)

func TestSelectNoAccount(t *testing.T) {
	ctx := context.Background()
	t.Run("empty group", func(t *testing.T) {
		f := newFixture(t)
		_, err := f.s.Select(ctx, Request{Group: "g", Model: "gpt-5"})
		var na *NoAccountError
		if !errors.As(err, &na) || na.Reason != ReasonNoAccounts || !strings.Contains(err.Error(), `"g"`) {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("model", func(t *testing.T) {
		f := newFixture(t, &Account{ID: "a", Models: []string{"gpt-4*"}}, &Account{ID: "b", Models: []string{"o3"}})
		_, err := f.s.Select(ctx, Request{Group: "g", Model: "gpt-5"})
		var na *NoAccountError
		if !errors.As(err, &na) || na.Reason != ReasonModel || na.total != 2 || na.eligible != 0 || !strings.Contains(err.Error(), "gpt-5") {
			t.Fatalf("err %v (%+v)", err, na)
		}
	})
	t.Run("transport", func(t *testing.T) {
		f := newFixture(t, acct("a"))
		_, err := f.s.Select(ctx, Request{Group: "g", Model: "gpt-5", WebSocket: true})
		var na *NoAccountError
		if !errors.As(err, &na) || na.Reason != ReasonModel || !strings.Contains(err.Error(), "WebSocket") {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("cooling down", func(t *testing.T) {
		f := newFixture(t, acct("a"), acct("b"), &Account{ID: "other", Models: []string{"o3"}})
		f.s.Observe("a", status(429, "", "Retry-After", "30"))
		f.s.Observe("b", status(429, "", "Retry-After", "7"))
		_, err := f.s.Select(ctx, Request{Group: "g", Model: "gpt-5"})
		var na *NoAccountError
		if !errors.As(err, &na) || na.Reason != ReasonCoolingDown || na.eligible != 2 || na.total != 3 ||
			!na.Until.Equal(f.clock.Now().Add(7*time.Second)) {
			t.Fatalf("err %v (%+v)", err, na)
		}
		if !strings.Contains(err.Error(), "12:00:07") {
			t.Fatalf("message %q does not say when", err)
		}
	})
	t.Run("excluded", func(t *testing.T) {
		f := newFixture(t, acct("a"), acct("b"))
		_, err := f.s.Select(ctx, Request{Group: "g", Model: "gpt-5", Exclude: []string{"a", "b"}})
		var na *NoAccountError
		if !errors.As(err, &na) || na.Reason != ReasonExcluded || na.eligible != 2 {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("excluded and cooling", func(t *testing.T) {
		f := newFixture(t, acct("a"), acct("b"))
		f.s.Observe("b", status(401, "{}"))
		_, err := f.s.Select(ctx, Request{Group: "g", Model: "gpt-5", Exclude: []string{"a"}})
		var na *NoAccountError
		if !errors.As(err, &na) || na.Reason != ReasonCoolingDown || !na.Until.Equal(f.clock.Now().Add(10*time.Minute)) {
			t.Fatalf("err %v", err)
		}
	})
}

func TestSelectionReleaseIdempotent(t *testing.T) {
	lim := concurrency.NewMemory()
	f := newFixture(t, acct("a"))
	f.s.Limiter = lim
	sel, err := f.s.Select(context.Background(), Request{Group: "g"})
	if err != nil {
		t.Fatal(err)
	}
	if f.s.InFlight("a") != 1 || lim.InFlight("account:a") != 1 {
		t.Fatalf("in flight %d / limiter %d", f.s.InFlight("a"), lim.InFlight("account:a"))
	}
	sel2, err := f.s.Select(context.Background(), Request{Group: "g"})
	if err != nil {
		t.Fatal(err)
	}
	sel.Release()
	sel.Release()
	if f.s.InFlight("a") != 1 || lim.InFlight("account:a") != 1 {
		t.Fatalf("double release freed two slots: %d / %d", f.s.InFlight("a"), lim.InFlight("account:a"))
	}
	sel2.Release()
	if f.s.InFlight("a") != 0 || accountSlots(lim, "a") != 0 {
		t.Fatalf("slots left: %d / %d", f.s.InFlight("a"), accountSlots(lim, "a"))
	}
}

func TestSelectLimiterError(t *testing.T) {
	boom := errors.New("redis: connection refused")
	f := newFixture(t, acct("a"))
	f.s.Limiter = &countingLimiter{err: boom}
	_, err := f.s.Select(context.Background(), Request{Group: "g"})
	if !errors.Is(err, boom) || !errors.Is(err, ErrLimiter) {
		t.Fatalf("err %v, want the limiter's, marked ErrLimiter", err)
	}
}

type failingPool struct{ err error }

func (p failingPool) Accounts(context.Context, string) ([]*Account, error) { return nil, p.err }

// failingStore fails every call.
type failingStore struct{ err error }

func (s failingStore) Get(context.Context, string) (string, bool, error) { return "", false, s.err }

func (s failingStore) Set(context.Context, string, string, time.Duration) error {
	return s.err
}

func (s failingStore) Delete(context.Context, string) error { return s.err }

func TestSelectErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := new(Scheduler).Select(ctx, Request{}); err == nil || !strings.Contains(err.Error(), "Pool") {
		t.Fatalf("nil Pool: %v", err)
	}
	boom := errors.New("db down")
	s := &Scheduler{Pool: failingPool{boom}}
	if _, err := s.Select(ctx, Request{Group: "g"}); !errors.Is(err, boom) {
		t.Fatalf("pool error: %v", err)
	}

	// A broken store costs stickiness, not the turn.
	f := newFixture(t, acct("a"))
	f.s.Store = failingStore{errors.New("store down")}
	sel, err := f.s.Select(ctx, Request{Group: "g", PreviousResponseID: "resp_1", SessionKey: "s"})
	if err != nil || sel.Layer != LayerBalanced {
		t.Fatalf("got %+v, %v", sel, err)
	}
	sel.Release()
	if !strings.Contains(f.logs.String(), "store down") {
		t.Fatalf("store failure not logged: %s", f.logs.String())
	}
	err = f.s.Bind(ctx, Request{SessionKey: "s"}, "a", "resp_1")
	if err == nil || !strings.Contains(err.Error(), "resp_1") || !strings.Contains(err.Error(), "session") {
		t.Fatalf("Bind: %v", err)
	}
	if err := f.s.Bind(ctx, Request{}, "", "resp_1"); err == nil {
		t.Fatal("Bind without an account ID succeeded")
	}
}

func TestSelectFollowsPoolChanges(t *testing.T) {
	f := newFixture(t, acct("a"))
	q := Request{Group: "g", Model: "gpt-5"}
	if id := f.pick(t, q); id != "a" {
		t.Fatalf("picked %s", id)
	}
	f.pool.Set("g", []*Account{acct("b")})
	for range 10 {
		if id := f.pick(t, q); id != "b" {
			t.Fatalf("picked %s after the pool changed", id)
		}
	}
	// A changed account is a new pointer; its new limits apply.
	f.pool.Set("g", []*Account{{ID: "b", Models: []string{"o3"}}})
	if _, err := f.s.Select(context.Background(), q); err == nil {
		t.Fatal("selected an account that no longer serves the model")
	}
}

// copyingPool returns a fresh copy of its slice on every call.
type copyingPool struct{ accts []*Account }

func (p copyingPool) Accounts(context.Context, string) ([]*Account, error) {
	return slices.Clone(p.accts), nil
}

func TestViewReusedForSamePointers(t *testing.T) {
	accts := []*Account{acct("a"), acct("b")}
	s := &Scheduler{Pool: copyingPool{accts}}
	s.init()
	v1 := s.view("g", slices.Clone(accts))
	v2 := s.view("g", slices.Clone(accts))
	if v1 != v2 {
		t.Fatal("view rebuilt for the same accounts")
	}
	changed := []*Account{accts[0], acct("b")}
	if v3 := s.view("g", changed); v3 == v1 || v3.slots[1].acct != changed[1] {
		t.Fatal("view not rebuilt for a new *Account")
	}
	sel, err := s.Select(context.Background(), Request{Group: "g"})
	if err != nil {
		t.Fatal(err)
	}
	sel.Release()
}

func TestStatsPruned(t *testing.T) {
	f := newFixture(t, acct("a"))
	f.s.init()
	for i := range 3000 {
		f.s.Observe(fmt.Sprint("gone", i), Outcome{Kind: OutcomeSuccess})
	}
	f.s.Observe("cooling", status(401, "{}"))
	if n := f.s.naccts.Load(); n != 3001 {
		t.Fatalf("%d records, want 3001", n)
	}
	f.pool.Set("g", []*Account{acct("a"), acct("b")}) // a rebuild prunes
	f.pick(t, Request{Group: "g"})
	if n := f.s.naccts.Load(); n != 3 {
		t.Fatalf("%d records after pruning, want a, b and the cooling one", n)
	}
	if f.s.CoolingUntil("cooling").IsZero() {
		t.Fatal("pruning dropped a cooldown")
	}
}

func TestViewCacheBounded(t *testing.T) {
	p := NewStaticPool()
	s := &Scheduler{Pool: p}
	for i := range maxViews + 10 {
		g := fmt.Sprint("g", i)
		p.Add(g, acct("a"))
		sel, err := s.Select(context.Background(), Request{Group: g})
		if err != nil {
			t.Fatal(err)
		}
		sel.Release()
		if n := s.nviews.Load(); n > maxViews {
			t.Fatalf("%d cached views", n)
		}
	}
	if _, ok := s.views.Load(fmt.Sprint("g", maxViews+9)); !ok {
		t.Fatal("the group just used is not cached")
	}
}
