package scheduler

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/relaykit/responsesrelay/concurrency"
)

// batchLimiter is a Batcher over a concurrency.Memory that reads and writes
// store (its shared backend) and counts its calls: a TakeBatch or a
// Release is one step, as one round trip to Redis would be.
type batchLimiter struct {
	*concurrency.Memory
	store Store // nil: cannot reach the Scheduler's Store

	batches, tries, releases atomic.Int32
	// onAccountFree, if set, is called when a Release frees an account
	// slot.
	onAccountFree func()
}

func newBatchLimiter(store Store) *batchLimiter {
	return &batchLimiter{Memory: concurrency.NewMemory(), store: store}
}

func (l *batchLimiter) TryAcquire(ctx context.Context, key string, limit int) (func(), bool, error) {
	l.tries.Add(1)
	return l.Memory.TryAcquire(ctx, key, limit)
}

func (l *batchLimiter) TakeBatch(ctx context.Context, b *Batch) error {
	l.batches.Add(1)
	b.Taken = -1
	if l.store != nil && b.Store == l.store {
		b.Read = true
		for _, k := range b.Reads {
			v, _, _ := l.store.Get(ctx, k)
			b.Values = append(b.Values, v)
		}
	}
	var extra, account func()
	b.ExtraTaken = true
	if b.Extra.Key != "" {
		extra, b.ExtraTaken, _ = l.Memory.TryAcquire(ctx, b.Extra.Key, b.Extra.Limit)
	}
	if b.ExtraTaken {
		for i, a := range b.Accounts {
			if r, ok, _ := l.Memory.TryAcquire(ctx, a.Key, a.Limit); ok {
				b.Taken, account = i, r
				break
			}
		}
	}
	read := b.Read
	b.Release = func(acct, ex bool, sets []StoreWrite) {
		l.releases.Add(1)
		if acct && account != nil {
			account()
			if l.onAccountFree != nil {
				l.onAccountFree()
			}
		}
		if ex && extra != nil {
			extra()
		}
		if read {
			for _, w := range sets {
				l.store.Set(context.Background(), w.Key, w.Value, w.TTL)
			}
		}
	}
	return nil
}

func (l *batchLimiter) calls() (batches, tries, releases int32) {
	return l.batches.Load(), l.tries.Load(), l.releases.Load()
}

// batchFixture is a fixture whose Scheduler batches over a shared store.
func batchFixture(t *testing.T, accts ...*Account) (*fixture, *batchLimiter, Store) {
	f := newFixture(t, accts...)
	store := newMemoryStore(1024, f.clock.Now)
	lim := newBatchLimiter(store)
	f.s.Store, f.s.Limiter = store, lim
	return f, lim, store
}

var userSlot = Slot{Key: "user:u", Limit: 1}

func TestTrySelectOneStepEachWay(t *testing.T) {
	f, lim, store := batchFixture(t, acct("a"), acct("b"))
	ctx := context.Background()
	q := Request{Group: "g", Model: "m", APIKeyID: "k", Wait: true}
	sel := f.s.TrySelect(ctx, q, userSlot)
	if sel == nil {
		t.Fatal("TrySelect took nothing")
	}
	if lim.InFlight("user:u") != 1 || accountSlots(lim, "a", "b") != 1 {
		t.Fatalf("held: user %d, accounts %d", lim.InFlight("user:u"), accountSlots(lim, "a", "b"))
	}
	if err := sel.BindOnRelease(ctx, q, "resp_1"); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := store.Get(ctx, responseKey("resp_1")); ok {
		t.Fatal("the binding reached the store before the release")
	}
	sel.ReleaseAll()
	sel.ReleaseAll()
	sel.Selection().Release()
	if b, tr, r := lim.calls(); b != 1 || tr != 0 || r != 1 {
		t.Fatalf("batches %d, tries %d, releases %d; want 1, 0, 1", b, tr, r)
	}
	if lim.InFlight("user:u") != 0 || accountSlots(lim, "a", "b") != 0 || f.s.InFlight(sel.Selection().Account.ID) != 0 {
		t.Fatal("slots held after ReleaseAll")
	}
	if _, ok, _ := store.Get(ctx, responseKey("resp_1")); !ok {
		t.Fatal("ReleaseAll did not write the binding")
	}
}

// A continuation goes to the account that made the response in one step,
// even before the binding reached the store.
func TestTrySelectPreviousResponse(t *testing.T) {
	f, lim, _ := batchFixture(t, acct("a"), acct("b"), acct("c"), acct("d"))
	ctx := context.Background()
	for range 8 {
		q := Request{Group: "g", Model: "m", APIKeyID: "k", Wait: true}
		first := f.s.TrySelect(ctx, q, userSlot)
		first.BindOnRelease(ctx, q, "resp_x")
		made := first.Selection().Account.ID
		q.PreviousResponseID = "resp_x"

		// The first turn still holds the user's only slot.
		if sel := f.s.TrySelect(ctx, q, userSlot); sel != nil {
			t.Fatal("TrySelect took a full user slot")
		}
		if Select, err := f.s.Select(ctx, q); err != nil || Select.Account.ID != made {
			t.Fatalf("Select before the binding was written: %v", err)
		} else {
			Select.Release()
		}
		first.ReleaseAll()

		b0, t0, _ := lim.calls()
		sel := f.s.TrySelect(ctx, q, userSlot)
		if sel == nil || sel.Selection().Account.ID != made || sel.Selection().Layer != LayerPreviousResponse {
			t.Fatalf("continuation: %+v, made on %s", sel, made)
		}
		if b, tr, _ := lim.calls(); b != b0+1 || tr != t0 {
			t.Fatalf("continuation cost %d batches and %d tries", b-b0, tr-t0)
		}
		sel.ReleaseAll()
	}
	if lim.InFlight("user:u") != 0 || accountSlots(lim, "a", "b", "c", "d") != 0 {
		t.Fatal("slots held")
	}
}

// A binding another process wrote is followed too (the guess was wrong:
// more steps, same account).
func TestTrySelectBindingOfAnotherProcess(t *testing.T) {
	f, lim, store := batchFixture(t, acct("a"), acct("b"), acct("c"), acct("d"))
	other := &Scheduler{Pool: f.pool, Store: store, Limiter: lim, Now: f.clock.Now}
	ctx := context.Background()
	for _, id := range []string{"a", "b", "c", "d"} {
		q := Request{Group: "g", Model: "m", APIKeyID: "k", SessionKey: "s-" + id, Wait: true}
		if err := other.Bind(ctx, q, id, "resp_"+id); err != nil {
			t.Fatal(err)
		}
		q.PreviousResponseID = "resp_" + id
		sel := f.s.TrySelect(ctx, q, userSlot)
		if sel == nil || sel.Selection().Account.ID != id {
			t.Fatalf("bound to %s, got %+v", id, sel)
		}
		sel.ReleaseAll()
	}
	if lim.InFlight("user:u") != 0 || accountSlots(lim, "a", "b", "c", "d") != 0 {
		t.Fatal("slots held")
	}
}

// Whatever TrySelect declines, it holds nothing, and Select decides.
func TestTrySelectDeclines(t *testing.T) {
	f, lim, _ := batchFixture(t, &Account{ID: "a", Concurrency: 1, Weight: 1})
	ctx := context.Background()
	q := Request{Group: "g", Model: "m", APIKeyID: "k", Wait: true}
	sel := f.s.TrySelect(ctx, q, userSlot)
	sel.BindOnRelease(ctx, q, "resp_k")
	sel.ReleaseAll()

	held := f.s.TrySelect(ctx, Request{Group: "g", Model: "m", APIKeyID: "k2"}, Slot{Key: "user:v", Limit: 1})
	cases := map[string]struct {
		q    Request
		also Slot
	}{
		"account full":      {Request{Group: "g", Model: "m", APIKeyID: "k"}, userSlot},
		"required account":  {Request{Group: "g", Model: "m", RequireAccount: "a"}, userSlot},
		"another key's":     {Request{Group: "g", Model: "m", APIKeyID: "evil", PreviousResponseID: "resp_k"}, userSlot},
		"unknown model":     {Request{Group: "nope", Model: "m"}, userSlot},
		"user full (other)": {Request{Group: "g", Model: "m", APIKeyID: "k2"}, Slot{Key: "user:v", Limit: 1}},
	}
	for name, c := range cases {
		if sel := f.s.TrySelect(ctx, c.q, c.also); sel != nil {
			t.Fatalf("%s: TrySelect took %s", name, sel.Selection().Account.ID)
		}
		if lim.InFlight("user:u") != 0 || lim.InFlight("account:a") != 1 || lim.InFlight("user:v") != 1 {
			t.Fatalf("%s: slots held", name)
		}
	}
	held.ReleaseAll()
	// Another key's response is refused without a slot: by the cache, and
	// by the store when the cache does not know it.
	f.s.seen.Delete(ctx, responseKey("resp_k"))
	if sel := f.s.TrySelect(ctx, Request{Group: "g", Model: "m", APIKeyID: "evil", PreviousResponseID: "resp_k"}, userSlot); sel != nil {
		t.Fatal("another key's response taken")
	}
	if _, err := f.s.Select(ctx, Request{Group: "g", Model: "m", APIKeyID: "evil", PreviousResponseID: "resp_k"}); !errors.Is(err, ErrResponseNotOwned) {
		t.Fatalf("Select: %v", err)
	}
	if lim.InFlight("user:u") != 0 || lim.InFlight("account:a") != 0 || lim.InFlight("user:v") != 0 {
		t.Fatal("slots held")
	}
}

// After a failed attempt the account goes back alone; ReleaseAll then
// frees the other slot once.
func TestTrySelectReleaseThenReleaseAll(t *testing.T) {
	f, lim, _ := batchFixture(t, acct("a"))
	ctx := context.Background()
	sel := f.s.TrySelect(ctx, Request{Group: "g", Model: "m", Wait: true}, userSlot)
	sel.Selection().Release()
	if lim.InFlight("account:a") != 0 || lim.InFlight("user:u") != 1 || f.s.InFlight("a") != 0 {
		t.Fatal("Release did not free the account alone")
	}
	sel.ReleaseAll()
	sel.Selection().Release()
	if lim.InFlight("user:u") != 0 || f.s.InFlight("a") != 0 {
		t.Fatal("ReleaseAll did not free the user slot")
	}
}

// A Batcher that cannot reach the Store leaves reads and writes to the
// Scheduler: bindings still work.
func TestTrySelectStoreElsewhere(t *testing.T) {
	f := newFixture(t, acct("a"), acct("b"), acct("c"))
	lim := newBatchLimiter(nil)
	f.s.Limiter = lim
	ctx := context.Background()
	q := Request{Group: "g", Model: "m", APIKeyID: "k", Wait: true}
	sel := f.s.TrySelect(ctx, q, userSlot)
	sel.BindOnRelease(ctx, q, "resp_1")
	sel.ReleaseAll()
	q.PreviousResponseID = "resp_1"
	for range 4 {
		next := f.s.TrySelect(ctx, q, userSlot)
		if next == nil || next.Selection().Account.ID != sel.Selection().Account.ID {
			t.Fatalf("continuation: %+v, want %s", next, sel.Selection().Account.ID)
		}
		next.ReleaseAll()
	}
}

// Without a Batcher, TrySelect declines and Select is unchanged.
func TestTrySelectWithoutBatcher(t *testing.T) {
	f := newFixture(t, acct("a"))
	if sel := f.s.TrySelect(context.Background(), Request{Group: "g", Model: "m"}, userSlot); sel != nil {
		t.Fatal("TrySelect without a Batcher")
	}
	if f.s.seen != nil {
		t.Fatal("a Scheduler without a Batcher keeps a binding cache")
	}
}
