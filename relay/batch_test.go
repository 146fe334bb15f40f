package relay_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/concurrency"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/relaykit/responsesrelay/scheduler"
	"github.com/tidwall/gjson"
)

// mapStore is a scheduler.Store in a map, without expiry, that counts
// its Sets (each a round trip of a shared Store).
type mapStore struct {
	mu   sync.Mutex
	m    map[string]string
	sets atomic.Int64
}

func (s *mapStore) Get(_ context.Context, k string) (string, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[k]
	return v, ok, nil
}

func (s *mapStore) Set(_ context.Context, k, v string, _ time.Duration) error {
	s.sets.Add(1)
	s.put(k, v)
	return nil
}

// put is Set as part of another step.
func (s *mapStore) put(k, v string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[k] = v
}

func (s *mapStore) Delete(_ context.Context, k string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, k)
	return nil
}

// batching is a scheduler.Batcher over the env's user slots (a
// concurrency.Memory, which also holds the account slots) and a mapStore:
// a shared backend in which every call is one step, counted.
type batching struct {
	*concurrency.Memory
	store *mapStore
	steps atomic.Int64 // TakeBatch, Release, TryAcquire, Acquire
	// hang, when set, holds every TakeBatch until closed, whatever its
	// context says (a backend that does not answer).
	hang chan struct{}
}

func (b *batching) TryAcquire(ctx context.Context, key string, limit int) (func(), bool, error) {
	b.steps.Add(1)
	return b.Memory.TryAcquire(ctx, key, limit)
}

func (b *batching) Acquire(ctx context.Context, key string, limit int, o concurrency.WaitOptions) (func(), error) {
	b.steps.Add(1)
	return b.Memory.Acquire(ctx, key, limit, o)
}

func (b *batching) TakeBatch(ctx context.Context, q *scheduler.Batch) error {
	b.steps.Add(1)
	if b.hang != nil {
		<-b.hang
	}
	q.Taken, q.Read = -1, q.Store == scheduler.Store(b.store)
	if q.Read {
		for _, k := range q.Reads {
			v, _, _ := b.store.Get(ctx, k)
			q.Values = append(q.Values, v)
		}
	}
	var extra, account func()
	q.ExtraTaken = true
	if q.Extra.Key != "" {
		extra, q.ExtraTaken, _ = b.Memory.TryAcquire(ctx, q.Extra.Key, q.Extra.Limit)
	}
	if q.ExtraTaken {
		for i, a := range q.Accounts {
			if r, ok, _ := b.Memory.TryAcquire(ctx, a.Key, a.Limit); ok {
				q.Taken, account = i, r
				break
			}
		}
	}
	read := q.Read
	q.Release = func(acct, ex bool, sets []scheduler.StoreWrite) {
		b.steps.Add(1)
		if acct && account != nil {
			account()
		}
		if ex && extra != nil {
			extra()
		}
		if read {
			for _, w := range sets {
				b.store.put(w.Key, w.Value)
			}
		}
	}
	return nil
}

func newBatchingEnv(t *testing.T, accounts ...string) (*env, *batching) {
	e := newEnv(t, accounts...)
	b := &batching{Memory: e.Users, store: &mapStore{m: map[string]string{}}}
	e.sched.Store, e.sched.Limiter, e.h.Limiter = b.store, b, b
	e.Subject.Concurrency = 2
	return e, b
}

// A served turn costs two steps of the shared backend, JSON or streamed,
// continued or not: one takes the user's and the account's slots (reading
// the bindings), one gives both back (writing the new binding).
func TestBatchTwoStepsPerTurn(t *testing.T) {
	e, b := newBatchingEnv(t, "a", "b", "c")
	prev := ""
	for i, body := range []string{textReq, streamReq, textReq, streamReq} {
		if prev != "" {
			body = strings.Replace(body, `{`, `{"previous_response_id":"`+prev+`",`, 1)
		}
		before := b.steps.Load()
		r := e.do(body)
		if r.status != 200 {
			t.Fatalf("turn %d: %d %s", i, r.status, r.body)
		}
		if n := b.steps.Load() - before; n != 2 {
			t.Fatalf("turn %d (previous %q) cost %d steps, want 2", i, prev, n)
		}
		id := gjson.GetBytes(r.body, "id").String()
		if len(r.events) > 0 {
			id = gjson.GetBytes(r.events[len(r.events)-1].Data, "response.id").String()
		}
		if prev != "" {
			reqs := e.up.Requests()
			if reqs[len(reqs)-1].Account != reqs[len(reqs)-2].Account {
				t.Fatalf("turn %d continued %s on another account", i, prev)
			}
		}
		prev = id
	}
}

// Another key's response is refused as before, with nothing taken.
func TestBatchNotOwned(t *testing.T) {
	e, _ := newBatchingEnv(t, "a", "b")
	r := e.do(textReq)
	id := gjson.GetBytes(r.body, "id").String()
	e.Mu.Lock()
	e.Subject.APIKeyID = "k2"
	e.Mu.Unlock()
	r = e.do(`{"model":"gpt-test","input":"x","previous_response_id":"` + id + `"}`)
	if code := gjson.GetBytes(r.body, "error.code").String(); r.status != 400 || code != "previous_response_not_found" {
		t.Fatalf("another key's response: %d %s", r.status, r.body)
	}
}

// A user at its limit waits in the queue as before; slots come back after
// failover, a client gone mid-stream and the queue (checked at cleanup).
func TestBatchSlowPaths(t *testing.T) {
	e, _ := newBatchingEnv(t, "a")
	e.Subject.Concurrency = 1

	release, first := e.holdOne()
	second := make(chan result, 1)
	go func() { second <- e.do(textReq) }()
	waitUntil(t, "the second turn to queue", func() bool { return e.lim.Waiting("user:u1") == 1 })
	release()
	for _, ch := range []<-chan result{first, second} {
		if r := <-ch; r.status != 200 {
			t.Fatalf("queued turn: %d %s", r.status, r.body)
		}
	}

	e.leaveMidStream("a", streamReq)
	waitUntil(t, "the slots to come back", func() bool {
		return e.lim.InFlight("user:u1") == 0 && schedInFlight(e.sched, "a") == 0
	})
}

// A failed attempt frees its account before the next; the served one
// frees both slots at the end.
func TestBatchFailover(t *testing.T) {
	e, _ := newBatchingEnv(t, "a", "b")
	// Turns until one met the 429 and failed over: each is served.
	e.up.Script("a", relaytest.Step{Status: 429})
	for len(e.up.Requests()) == len(e.sink.all()) {
		if r := e.do(textReq); r.status != 200 {
			t.Fatalf("failover: %d %s", r.status, r.body)
		}
	}
}

// A one-step take that hangs past HookTimeout is abandoned: the turn takes
// its slots one call at a time and is served; the slots the late step
// took are given back when it returns.
func TestBatchHangs(t *testing.T) {
	e, b := newBatchingEnv(t, "a")
	e.h.HookTimeout = 20 * time.Millisecond
	b.hang = make(chan struct{})
	if r := e.do(textReq); r.status != 200 {
		t.Fatalf("status %d %s", r.status, r.body)
	}
	close(b.hang)
	waitUntil(t, "the late step's slots to come back", func() bool {
		return e.lim.InFlight("user:u1") == 0 && e.lim.InFlight("account:a") == 0 && schedInFlight(e.sched, "a") == 0
	})
}

// With Scheduler.SlotLinger, a turn without a user slot keeps its account
// slot for the next: after the first turn, a new conversation costs one
// step of the shared backend (its binding written) instead of two, and a
// continuation two (its binding read, then the new one written) without
// taking a slot.
// A client gone mid-stream leaves its slot kept as well, and Shutdown
// gives every kept slot back.
func TestBatchSlotLinger(t *testing.T) {
	e, b := newBatchingEnv(t, "a")
	e.Subject.Concurrency = 0 // no user slot
	e.sched.SlotLinger = time.Hour
	accountSlot := func() int { return e.lim.InFlight("account:a") }

	prev := ""
	for i, body := range []string{textReq, streamReq, textReq, streamReq, textReq} {
		if i >= 3 {
			body = strings.Replace(body, `{`, `{"previous_response_id":"`+prev+`",`, 1)
		}
		steps := func() int64 { return b.steps.Load() + b.store.sets.Load() }
		before := steps()
		r := e.do(body)
		if r.status != 200 {
			t.Fatalf("turn %d: %d %s", i, r.status, r.body)
		}
		want := int64(1) // the binding written
		if i == 0 || i >= 3 {
			want = 2 // the slot taken or the binding read, then written
		}
		if n := steps() - before; n != want {
			t.Fatalf("turn %d (previous %q) cost %d steps, want %d", i, prev, n, want)
		}
		if accountSlot() != 1 || schedInFlight(e.sched, "a") != 0 {
			t.Fatalf("turn %d: %d account slots held, %d in flight; want the one kept", i, accountSlot(), schedInFlight(e.sched, "a"))
		}
		prev = gjson.GetBytes(r.body, "id").String()
		if len(r.events) > 0 {
			prev = gjson.GetBytes(r.events[len(r.events)-1].Data, "response.id").String()
		}
		// The binding is in the backend when the client has the answer,
		// whether the release wrote it (turn 0) or the turn did.
		if got, _, _ := b.store.Get(context.Background(), "resp:"+prev); got == "" {
			t.Fatalf("turn %d: %s not bound before the answer", i, prev)
		}
	}

	e.leaveMidStream("a", streamReq)
	waitUntil(t, "the stream's slot to be kept", func() bool { return schedInFlight(e.sched, "a") == 0 })
	if accountSlot() != 1 {
		t.Fatalf("%d account slots held after a client left; want the one kept", accountSlot())
	}
	if err := e.h.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if accountSlot() != 0 {
		t.Fatalf("%d account slots held after Shutdown", accountSlot())
	}
}

// With SlotLinger, an attempt that fails (a reset before any answer)
// gives its account's slot back before the next selection, and the
// account selected after it is not kept either; a turn claimed on a
// healthy account keeps its slot, and Shutdown gives it back.
func TestBatchSlotLingerFailover(t *testing.T) {
	e, _ := newBatchingEnv(t)
	e.addAccount(&scheduler.Account{ID: "a", Priority: 0})
	e.addAccount(&scheduler.Account{ID: "b", Priority: 1})
	e.Subject.Concurrency = 0
	e.sched.SlotLinger = time.Hour
	e.up.Script("a", relaytest.Step{Cut: true})
	r := e.do(streamReq)
	if r.lastType() != "response.completed" {
		t.Fatalf("events %v", r.types())
	}
	if got := accountsOf(e.up.Requests()); len(got) != 2 || got[0] != "a" || got[1] != "b" {
		t.Fatalf("attempts on %v, want a then b", got)
	}
	// The account that served was selected the usual way after the
	// failure, not claimed in the one step: its slot went back too.
	if a, b := e.lim.InFlight("account:a"), e.lim.InFlight("account:b"); a+b != 0 {
		t.Fatalf("slots held after the failover: a %d, b %d", a, b)
	}
	// The next turn is claimed in the one step: its account's slot is kept.
	if r := e.do(textReq); r.status != 200 {
		t.Fatalf("second turn: %d %s", r.status, r.body)
	}
	reqs := e.up.Requests()
	served := reqs[len(reqs)-1].Account
	if a, b := e.lim.InFlight("account:a"), e.lim.InFlight("account:b"); a+b != 1 || e.lim.InFlight("account:"+served) != 1 {
		t.Fatalf("slots held: a %d, b %d; want %s's one kept", a, b, served)
	}
	if err := e.h.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if a, b := e.lim.InFlight("account:a"), e.lim.InFlight("account:b"); a+b != 0 {
		t.Fatalf("slots held after Shutdown: a %d, b %d", a, b)
	}
}
