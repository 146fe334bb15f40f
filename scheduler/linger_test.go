package scheduler

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"
)

// lingerFixture is a batching fixture whose account slots linger for d.
func lingerFixture(t *testing.T, d time.Duration, accts ...*Account) (*fixture, *batchLimiter, Store) {
	f, lim, store := batchFixture(t, accts...)
	f.s.SlotLinger = d
	t.Cleanup(f.s.ReleaseLingering)
	return f, lim, store
}

// A turn after another takes the slot the first kept, without a step, and
// binds at once; ReleaseLingering gives the slot back.
func TestSlotLingerBackToBack(t *testing.T) {
	f, lim, store := lingerFixture(t, time.Hour, acct("a"), acct("b"), acct("c"))
	ctx := context.Background()
	q := Request{Group: "g", Model: "m", APIKeyID: "k", Wait: true}

	first := f.s.TrySelect(ctx, q, Slot{})
	if first == nil {
		t.Fatal("TrySelect took nothing")
	}
	id := first.Selection().Account.ID
	first.BindOnRelease(ctx, q, "resp_1")
	first.ReleaseAll()
	if got := accountSlots(lim, "a", "b", "c"); got != 1 || f.s.InFlight(id) != 0 || f.s.lingering.len() != 1 {
		t.Fatalf("after the first turn: %d slots held, %d in flight, %d lingering; want 1, 0, 1", got, f.s.InFlight(id), f.s.lingering.len())
	}
	if _, ok, _ := store.Get(ctx, responseKey("resp_1")); !ok {
		t.Fatal("the first turn's binding was not written with its release")
	}

	for i := range 5 {
		b0, t0, r0 := lim.calls()
		sel := f.s.TrySelect(ctx, q, Slot{})
		if sel == nil || sel.Selection().Account.ID != id || sel.Selection().Layer != LayerBalanced {
			t.Fatalf("turn %d: %+v, want the lingering slot of %s", i, sel, id)
		}
		if f.s.InFlight(id) != 1 || f.s.lingering.len() != 0 {
			t.Fatalf("turn %d: %d in flight, %d lingering", i, f.s.InFlight(id), f.s.lingering.len())
		}
		resp := "resp_next" + string(rune('0'+i))
		if err := sel.BindOnRelease(ctx, q, resp); err != nil {
			t.Fatal(err)
		}
		if got, ok, _ := store.Get(ctx, responseKey(resp)); !ok || got == "" {
			t.Fatalf("turn %d: a turn on a lingering slot binds at once; the store has %q", i, got)
		}
		sel.ReleaseAll()
		if b, tr, r := lim.calls(); b != b0 || tr != t0 || r != r0 {
			t.Fatalf("turn %d took %d batches, %d tries, %d releases; want none", i, b-b0, tr-t0, r-r0)
		}
		if accountSlots(lim, "a", "b", "c") != 1 {
			t.Fatalf("turn %d: %d slots held", i, accountSlots(lim, "a", "b", "c"))
		}
	}

	f.s.ReleaseLingering()
	if got := accountSlots(lim, "a", "b", "c"); got != 0 || f.s.lingering.len() != 0 {
		t.Fatalf("after ReleaseLingering: %d slots held, %d lingering", got, f.s.lingering.len())
	}
}

// A lingering slot goes back on its own after SlotLinger.
func TestSlotLingerExpires(t *testing.T) {
	f, lim, _ := lingerFixture(t, 5*time.Millisecond, acct("a"))
	freed := make(chan struct{})
	lim.onAccountFree = func() { close(freed) }
	ctx := context.Background()
	q := Request{Group: "g", Model: "m", APIKeyID: "k"}
	sel := f.s.TrySelect(ctx, q, Slot{})
	sel.ReleaseAll()
	select {
	case <-freed:
	case <-time.After(10 * time.Second):
		t.Fatal("the lingering slot was never given back")
	}
	if got := accountSlots(lim, "a"); got != 0 || f.s.lingering.len() != 0 {
		t.Fatalf("%d slots held, %d lingering", got, f.s.lingering.len())
	}
}

// Turns that read bindings, take a user slot, or may not use the account
// kept go the usual way, and the kept slot stays kept.
func TestSlotLingerNotTaken(t *testing.T) {
	f, lim, _ := lingerFixture(t, time.Hour, acct("a"), acct("b"))
	ctx := context.Background()
	base := Request{Group: "g", Model: "m", APIKeyID: "k"}
	first := f.s.TrySelect(ctx, base, Slot{})
	id := first.Selection().Account.ID
	first.BindOnRelease(ctx, base, "resp_kept")
	first.ReleaseAll()

	other := "a"
	if id == "a" {
		other = "b"
	}
	if err := f.s.Bind(ctx, base, other, "resp_other"); err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		q    Request
		also Slot
	}{
		"previous response elsewhere": {Request{Group: "g", Model: "m", APIKeyID: "k", PreviousResponseID: "resp_other"}, Slot{}},
		"previous response not seen":  {Request{Group: "g", Model: "m", APIKeyID: "k", PreviousResponseID: "resp_unknown"}, Slot{}},
		"user slot, same response":    {Request{Group: "g", Model: "m", APIKeyID: "k", PreviousResponseID: "resp_kept"}, userSlot},
		"session key":                 {Request{Group: "g", Model: "m", APIKeyID: "k", SessionKey: "s1"}, Slot{}},
		"user slot":                   {base, userSlot},
		"pinned elsewhere":            {Request{Group: "g", Model: "m", APIKeyID: "k", PreferAccount: other}, Slot{}},
		"excluded":                    {Request{Group: "g", Model: "m", APIKeyID: "k", Exclude: []string{id}}, Slot{}},
	}
	for name, c := range cases {
		b0, _, _ := lim.calls()
		sel := f.s.TrySelect(ctx, c.q, c.also)
		if sel == nil {
			t.Fatalf("%s: TrySelect took nothing", name)
		}
		if b, _, _ := lim.calls(); b != b0+1 {
			t.Errorf("%s: took no step: the lingering slot served it", name)
		}
		if f.s.lingering.len() != 1 {
			t.Errorf("%s: %d lingering, want the kept one", name, f.s.lingering.len())
		}
		sel.Selection().Release() // a failed attempt: its slot goes back
		sel.ReleaseAll()
	}
	if got := accountSlots(lim, "a", "b"); got != 1 {
		t.Fatalf("%d slots held, want the kept one", got)
	}
	if lim.InFlight("user:u") != 0 {
		t.Fatal("user slot held")
	}
}

// A continuation of a response made on the kept slot's account takes it,
// after one step that reads the binding and takes no slot; a session bound
// there too. When the binding read differs from what this process knew
// (another instance moved it), the usual way decides and the slot stays
// kept.
func TestSlotLingerContinuation(t *testing.T) {
	f, lim, store := lingerFixture(t, time.Hour, acct("a"), acct("b"), acct("c"))
	ctx := context.Background()
	q := Request{Group: "g", Model: "m", APIKeyID: "k", SessionKey: "s1"}
	first := f.s.TrySelect(ctx, q, Slot{})
	id := first.Selection().Account.ID
	first.BindOnRelease(ctx, q, "resp_1")
	first.ReleaseAll()

	prev := "resp_1"
	for i := range 4 {
		q.PreviousResponseID = prev
		b0, t0, r0 := lim.calls()
		sel := f.s.TrySelect(ctx, q, Slot{})
		if sel == nil || sel.Selection().Account.ID != id || sel.Selection().Layer != LayerPreviousResponse {
			t.Fatalf("turn %d: %+v, want %s's kept slot", i, sel, id)
		}
		if b, tr, r := lim.calls(); b != b0+1 || tr != t0 || r != r0 {
			t.Fatalf("turn %d: %d batches, %d tries, %d releases; want 1, 0, 0", i, b-b0, tr-t0, r-r0)
		}
		if f.s.lingering.len() != 0 || accountSlots(lim, "a", "b", "c") != 1 {
			t.Fatalf("turn %d: %d lingering, %d slots held", i, f.s.lingering.len(), accountSlots(lim, "a", "b", "c"))
		}
		prev = "resp_c" + string(rune('0'+i))
		sel.BindOnRelease(ctx, q, prev)
		sel.ReleaseAll()
		if b, _, r := lim.calls(); b != b0+1 || r != r0+1 {
			t.Fatalf("turn %d: %d batches, %d releases in all; want 1 each", i, b-b0, r-r0)
		}
		if got, _, _ := store.Get(ctx, responseKey(prev)); got == "" {
			t.Fatalf("turn %d: the binding was not written", i)
		}
	}

	// Another instance binds the session elsewhere.
	other := "a"
	if id == "a" {
		other = "b"
	}
	peer := &Scheduler{Pool: f.pool, Store: store, Limiter: lim, Now: f.clock.Now}
	if err := peer.Bind(ctx, Request{Group: "g", Model: "m", APIKeyID: "k", SessionKey: "s1"}, other, ""); err != nil {
		t.Fatal(err)
	}
	sel := f.s.TrySelect(ctx, Request{Group: "g", Model: "m", APIKeyID: "k", SessionKey: "s1"}, Slot{})
	if sel == nil || sel.Selection().Account.ID != other {
		t.Fatalf("got %+v, want the session's new account %s", sel, other)
	}
	if f.s.lingering.len() != 1 {
		t.Fatalf("%d lingering, want %s's still kept", f.s.lingering.len(), id)
	}
	sel.ReleaseAll()
	f.s.ReleaseLingering()
	if got := accountSlots(lim, "a", "b", "c"); got != 0 {
		t.Fatalf("%d slots held", got)
	}
}

// A kept slot is not used when its account is cooling down or busier
// than another: the balanced order decides.
func TestSlotLingerFollowsHealthAndLoad(t *testing.T) {
	ctx := context.Background()
	q := Request{Group: "g", Model: "m", APIKeyID: "k"}
	keep := func(f *fixture) string {
		sel := f.s.TrySelect(ctx, q, Slot{})
		id := sel.Selection().Account.ID
		sel.ReleaseAll()
		return id
	}

	t.Run("cooling", func(t *testing.T) {
		f, lim, _ := lingerFixture(t, time.Hour, acct("a"), acct("b"))
		id := keep(f)
		f.s.Observe(id, Outcome{Kind: OutcomeStatus, Status: http.StatusTooManyRequests, Header: http.Header{"Retry-After": {"60"}}})
		b0, _, _ := lim.calls()
		sel := f.s.TrySelect(ctx, q, Slot{})
		if sel == nil || sel.Selection().Account.ID == id {
			t.Fatalf("got %+v: the cooling account's kept slot served", sel)
		}
		if b, _, _ := lim.calls(); b != b0+1 {
			t.Fatal("took no step")
		}
		sel.ReleaseAll()
		f.s.ReleaseLingering()
		if got := accountSlots(lim, "a", "b"); got != 0 {
			t.Fatalf("%d slots held", got)
		}
	})

	t.Run("busier", func(t *testing.T) {
		f, lim, _ := lingerFixture(t, time.Hour, &Account{ID: "a", Concurrency: 3, Weight: 1}, &Account{ID: "b", Concurrency: 3, Weight: 1})
		id := keep(f)
		busy, err := f.s.Select(ctx, Request{Group: "g", Model: "m", APIKeyID: "k", RequireAccount: id})
		if err != nil {
			t.Fatal(err)
		}
		sel := f.s.TrySelect(ctx, q, Slot{})
		if sel == nil || sel.Selection().Account.ID == id {
			t.Fatalf("got %+v: the busier account's kept slot served", sel)
		}
		sel.ReleaseAll()
		busy.Release()
		f.s.ReleaseLingering()
		if got := accountSlots(lim, "a", "b"); got != 0 {
			t.Fatalf("%d slots held", got)
		}
	})
}

// Concurrent turns share the kept slots without taking one twice or
// holding more than an account's limit; at the end every slot is back.
func TestSlotLingerConcurrent(t *testing.T) {
	accts := []*Account{{ID: "a", Concurrency: 3, Weight: 1}, {ID: "b", Concurrency: 3, Weight: 1}}
	f, lim, _ := lingerFixture(t, time.Millisecond, accts...)
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 300 {
				q := Request{Group: "g", Model: "m", APIKeyID: "k"}
				sel := f.s.TrySelect(ctx, q, Slot{})
				if sel == nil {
					continue // both accounts full, some slots kept
				}
				if n := lim.InFlight("account:" + sel.Selection().Account.ID); n > 3 {
					t.Errorf("%d slots of a 3-slot account", n)
				}
				if (w+i)%7 == 0 {
					sel.Selection().Release()
				}
				sel.ReleaseAll()
			}
		}()
	}
	wg.Wait()
	f.s.ReleaseLingering()
	if got := accountSlots(lim, "a", "b"); got != 0 || f.s.InFlight("a")+f.s.InFlight("b") != 0 {
		t.Fatalf("%d slots held, %d in flight", got, f.s.InFlight("a")+f.s.InFlight("b"))
	}
}

// BenchmarkTrySelect is a turn's selection and release over a Batcher
// (an in-memory one: the round trips a shared store would add are not
// measured), with its account slot given back or kept (SlotLinger).
func BenchmarkTrySelect(b *testing.B) {
	for _, linger := range []time.Duration{0, time.Hour} {
		b.Run(fmt.Sprintf("linger=%v", linger), func(b *testing.B) {
			pool := NewStaticPool()
			pool.Set("g", accounts(10, func(int) *Account { return &Account{Concurrency: 100, Weight: 1} }))
			store := newMemoryStore(1024, time.Now)
			s := &Scheduler{Pool: pool, Store: store, Limiter: newBatchLimiter(store), SlotLinger: linger}
			defer s.ReleaseLingering()
			ctx := context.Background()
			q := Request{Group: "g", Model: "m", APIKeyID: "k"}
			b.ReportAllocs()
			for b.Loop() {
				c := s.TrySelect(ctx, q, Slot{})
				if c == nil {
					b.Fatal("nothing taken")
				}
				c.ReleaseAll()
			}
		})
	}
}

// With a slot kept on each of 100 accounts, a new turn still takes one
// without a step (it looks at a bounded number of them), and a
// continuation finds its own account's among them.
func TestSlotLingerManyAccounts(t *testing.T) {
	accts := accounts(100, func(int) *Account { return &Account{Concurrency: 3, Weight: 1} })
	f, lim, _ := lingerFixture(t, time.Hour, accts...)
	ctx := context.Background()
	q := Request{Group: "g", Model: "m", APIKeyID: "k"}
	var held []*Claimed
	for range 100 {
		c := f.s.TrySelect(ctx, q, Slot{})
		if c == nil {
			t.Fatal("TrySelect took nothing")
		}
		held = append(held, c)
	}
	bound := held[57].Selection().Account.ID
	held[57].BindOnRelease(ctx, q, "resp_57")
	for _, c := range held {
		c.ReleaseAll()
	}
	if f.s.lingering.len() != 100 {
		t.Fatalf("%d kept, want 100", f.s.lingering.len())
	}

	b0, _, _ := lim.calls()
	c := f.s.TrySelect(ctx, q, Slot{})
	if b, _, _ := lim.calls(); c == nil || b != b0 {
		t.Fatalf("a new turn took %d steps (%+v), want a kept slot", b-b0, c)
	}
	c.ReleaseAll()

	cont := q
	cont.PreviousResponseID = "resp_57"
	c = f.s.TrySelect(ctx, cont, Slot{})
	if c == nil || c.Selection().Account.ID != bound || f.s.lingering.len() != 99 {
		t.Fatalf("continuation: %+v, %d kept; want %s's kept slot", c, f.s.lingering.len(), bound)
	}
	c.ReleaseAll()
}

// Fewer than half of an account's slots are kept: none of an account with
// one or two, at most two of one with five; the others go back with their
// turns.
func TestSlotLingerKeepsFewerThanHalf(t *testing.T) {
	ctx := context.Background()
	q := Request{Group: "g", Model: "m", APIKeyID: "k"}
	for _, c := range []struct{ conc, kept int }{{1, 0}, {2, 0}, {5, 2}} {
		f, lim, _ := lingerFixture(t, time.Hour, &Account{ID: "a", Concurrency: c.conc, Weight: 1})
		var held []*Claimed
		for range c.conc {
			cl := f.s.TrySelect(ctx, q, Slot{})
			if cl == nil {
				t.Fatalf("concurrency %d: TrySelect took nothing with %d held", c.conc, len(held))
			}
			held = append(held, cl)
		}
		for _, cl := range held {
			cl.ReleaseAll()
		}
		if got := f.s.lingering.len(); got != c.kept || accountSlots(lim, "a") != c.kept {
			t.Fatalf("concurrency %d: %d kept, %d slots held; want %d", c.conc, got, accountSlots(lim, "a"), c.kept)
		}
		f.s.ReleaseLingering()
	}
}

// Snapshot counts an account's kept slots apart from its turns in flight.
func TestSlotLingerSnapshot(t *testing.T) {
	f, _, _ := lingerFixture(t, time.Hour, acct("a"))
	ctx := context.Background()
	sel := f.s.TrySelect(ctx, Request{Group: "g", Model: "m", APIKeyID: "k"}, Slot{})
	state := func() AccountState {
		for _, as := range f.s.Snapshot() {
			if as.ID == "a" {
				return as
			}
		}
		t.Fatal("account a not in the snapshot")
		return AccountState{}
	}
	if as := state(); as.InFlight != 1 || as.Kept != 0 {
		t.Fatalf("during the turn: in flight %d, kept %d", as.InFlight, as.Kept)
	}
	sel.ReleaseAll()
	if as := state(); as.InFlight != 0 || as.Kept != 1 {
		t.Fatalf("after the turn: in flight %d, kept %d", as.InFlight, as.Kept)
	}
	f.s.ReleaseLingering()
	if as := state(); as.Kept != 0 {
		t.Fatalf("after ReleaseLingering: kept %d", as.Kept)
	}
}
