package redisstore_test

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/relaykit/responsesrelay/concurrency"
	"github.com/relaykit/responsesrelay/examples/redisstore"
	"github.com/relaykit/responsesrelay/scheduler"
)

// roundTrips counts what a go-redis client sends: a command or a pipeline
// is one round trip. A script run that Redis answers NOSCRIPT and that is
// sent again with EVAL counts twice.
type roundTrips struct{ n atomic.Int64 }

func (r *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (r *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		r.n.Add(1)
		return next(ctx, cmd)
	}
}

func (r *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		r.n.Add(1)
		return next(ctx, cmds)
	}
}

// counted is a client of the test server whose round trips are counted.
func counted(t *testing.T) (*redis.Client, *roundTrips) {
	c := newClient(t)
	rt := &roundTrips{}
	c.AddHook(rt)
	return c, rt
}

// One script takes the user's slot and the first free account's and reads
// the bindings; one gives both back and writes a binding.
func TestBatchOneRoundTripEachWay(t *testing.T) {
	c, rt := counted(t)
	p := prefix(t, c)
	l := newLimiter(t, c, &redisstore.LimiterOptions{Prefix: p})
	st := redisstore.NewStore(c, &redisstore.StoreOptions{Prefix: p})
	// Checks go through a client of their own, which counts nothing.
	check := newLimiter(t, newClient(t), &redisstore.LimiterOptions{Prefix: p})
	ctx := context.Background()
	if err := st.Set(ctx, "resp:r1", "bound", time.Minute); err != nil {
		t.Fatal(err)
	}
	full, ok, err := l.TryAcquire(ctx, "account:a", 1)
	if err != nil || !ok {
		t.Fatalf("TryAcquire: %v %v", ok, err)
	}
	defer full()
	// Redis learns the scripts on their first run (NOSCRIPT, then EVAL).
	warm := &scheduler.Batch{Store: st, Reads: []string{"x"}, Extra: scheduler.Slot{Key: "user:w", Limit: 1},
		Accounts: []scheduler.Slot{{Key: "account:w", Limit: 1}}}
	if err := l.TakeBatch(ctx, warm); err != nil {
		t.Fatal(err)
	}
	warm.Release(true, true, []scheduler.StoreWrite{{Key: "w", Value: "w"}})
	waitFor(t, 5*time.Second, "the warm-up release", func() bool { h, _ := count(t, check, "user:w"); return h == 0 })

	before := rt.n.Load()
	b := &scheduler.Batch{Store: st, Reads: []string{"resp:r1", "sess:x"}, Extra: scheduler.Slot{Key: "user:u", Limit: 1},
		Accounts: []scheduler.Slot{{Key: "account:a", Limit: 1}, {Key: "account:b", Limit: 1}, {Key: "account:c", Limit: 1}}}
	if err := l.TakeBatch(ctx, b); err != nil {
		t.Fatal(err)
	}
	if n := rt.n.Load() - before; n != 1 {
		t.Fatalf("TakeBatch: %d round trips", n)
	}
	if !b.Read || !b.ExtraTaken || b.Taken != 1 || len(b.Values) != 2 || b.Values[0] != "bound" || b.Values[1] != "" {
		t.Fatalf("batch: read %v, extra %v, taken %d, values %q", b.Read, b.ExtraTaken, b.Taken, b.Values)
	}
	for key, want := range map[string]int{"user:u": 1, "account:a": 1, "account:b": 1, "account:c": 0} {
		if held, _ := count(t, check, key); held != want {
			t.Fatalf("%s: %d held, want %d", key, held, want)
		}
	}

	before = rt.n.Load()
	b.Release(true, true, []scheduler.StoreWrite{{Key: "resp:r2", Value: "made", TTL: time.Minute}})
	b.Release(true, true, nil) // nothing left: no call
	if l.InFlight("user:u") != 0 || l.InFlight("account:b") != 0 {
		t.Fatal("slots counted in process after Release")
	}
	// The user's next batch finds the slot free.
	again := &scheduler.Batch{Extra: scheduler.Slot{Key: "user:u", Limit: 1}, Accounts: []scheduler.Slot{{Key: "account:b", Limit: 1}}}
	if err := l.TakeBatch(ctx, again); err != nil || !again.ExtraTaken || again.Taken != 0 {
		t.Fatalf("the user's next batch: err %v, extra %v, taken %d", err, again.ExtraTaken, again.Taken)
	}
	if n := rt.n.Load() - before; n != 2 {
		t.Fatalf("Release and the next TakeBatch: %d round trips, want 2", n)
	}
	again.Release(true, true, nil)
	waitFor(t, 5*time.Second, "the slots to leave Redis", func() bool {
		hu, _ := count(t, check, "user:u")
		hb, _ := count(t, check, "account:b")
		return hu == 0 && hb == 0
	})
	if v, ok, _ := st.Get(ctx, "resp:r2"); !ok || v != "made" {
		t.Fatalf("binding %q %v", v, ok)
	}
	if ttl := c.PTTL(ctx, p+"sticky:resp:r2").Val(); ttl <= 0 || ttl > time.Minute {
		t.Fatalf("binding TTL %v", ttl)
	}
}

// A full user slot, or a waiter queued for it, takes nothing; a batch
// with the account alone works without a user slot.
func TestBatchRespectsLimitsAndQueue(t *testing.T) {
	c := newClient(t)
	p := prefix(t, c)
	l := newLimiter(t, c, &redisstore.LimiterOptions{Prefix: p})
	other := newLimiter(t, c, &redisstore.LimiterOptions{Prefix: p})
	ctx := context.Background()
	accounts := []scheduler.Slot{{Key: "account:a", Limit: 2}}

	held, err := other.Acquire(ctx, "user:u", 1, concurrency.WaitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b := &scheduler.Batch{Extra: scheduler.Slot{Key: "user:u", Limit: 1}, Accounts: accounts}
	if err := l.TakeBatch(ctx, b); err != nil || b.ExtraTaken || b.Taken != -1 {
		t.Fatalf("full user: err %v, extra %v, taken %d", err, b.ExtraTaken, b.Taken)
	}
	if n, _ := count(t, l, "account:a"); n != 0 {
		t.Fatal("an account slot was taken for a full user")
	}
	// A waiter queues; when the holder leaves, the slot is the waiter's.
	waited := make(chan error, 1)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		release, err := other.Acquire(wctx, "user:u", 1, concurrency.WaitOptions{})
		if err == nil {
			defer release()
			<-wctx.Done()
		}
		waited <- err
	}()
	waitFor(t, 5*time.Second, "the waiter to queue", func() bool { _, q := count(t, l, "user:u"); return q == 1 })
	held()
	waitFor(t, 5*time.Second, "the waiter to get the slot", func() bool { h, q := count(t, l, "user:u"); return h == 1 && q == 0 })
	b = &scheduler.Batch{Extra: scheduler.Slot{Key: "user:u", Limit: 2}, Accounts: accounts}
	if err := l.TakeBatch(ctx, b); err != nil || !b.ExtraTaken || b.Taken != 0 {
		t.Fatalf("second slot of the user: err %v, extra %v, taken %d", err, b.ExtraTaken, b.Taken)
	}
	b.Release(true, true, nil)
	cancel()
	if err := <-waited; err != nil {
		t.Fatal(err)
	}

	b = &scheduler.Batch{Accounts: []scheduler.Slot{{Key: "account:unlimited"}, {Key: "account:a", Limit: 1}}}
	if err := l.TakeBatch(ctx, b); err != nil || !b.ExtraTaken || b.Taken != 0 || b.Read {
		t.Fatalf("no user slot: err %v, extra %v, taken %d, read %v", err, b.ExtraTaken, b.Taken, b.Read)
	}
	b.Release(true, true, nil)
	for _, key := range []string{"user:u", "account:a", "account:unlimited"} {
		waitFor(t, 5*time.Second, key+" to be free", func() bool { h, _ := count(t, l, key); return h == 0 && l.InFlight(key) == 0 })
	}
}

// Redis forgetting its scripts costs a retry, not a turn.
func TestBatchAfterScriptFlush(t *testing.T) {
	c := newClient(t)
	p := prefix(t, c)
	l := newLimiter(t, c, &redisstore.LimiterOptions{Prefix: p})
	ctx := context.Background()
	for range 2 {
		if err := c.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		b := &scheduler.Batch{Extra: scheduler.Slot{Key: "user:u", Limit: 1}, Accounts: []scheduler.Slot{{Key: "account:a", Limit: 1}}}
		if err := l.TakeBatch(ctx, b); err != nil || !b.ExtraTaken || b.Taken != 0 {
			t.Fatalf("err %v, extra %v, taken %d", err, b.ExtraTaken, b.Taken)
		}
		if err := c.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		b.Release(true, true, nil)
		waitFor(t, 5*time.Second, "the user slot to be free", func() bool { h, _ := count(t, l, "user:u"); return h == 0 })
	}
}

// Redis failing under a batch or its release: the batch holds nothing and
// says ErrUnavailable; a release that failed is retried until Redis is
// back, so every slot returns.
func TestBatchRedisFails(t *testing.T) {
	c := newClient(t)
	p := prefix(t, c)
	ctx := context.Background()

	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := dead.Addr().String()
	dead.Close()
	dc := unreachableClient(t, addr)
	tries := &roundTrips{}
	dc.AddHook(tries)
	down := newLimiter(t, dc, &redisstore.LimiterOptions{Prefix: p, Logger: (&logBuffer{}).logger()})
	b := &scheduler.Batch{Extra: scheduler.Slot{Key: "user:u", Limit: 1}, Accounts: []scheduler.Slot{{Key: "account:a", Limit: 1}}}
	if err := down.TakeBatch(ctx, b); !errors.Is(err, redisstore.ErrUnavailable) {
		t.Fatalf("TakeBatch with Redis down: %v", err)
	}
	if down.InFlight("user:u") != 0 || down.InFlight("account:a") != 0 {
		t.Fatal("slots held after a failed batch")
	}
	// Until a call succeeds, a batch does not try Redis at all.
	before := tries.n.Load()
	if err := down.TakeBatch(ctx, b); !errors.Is(err, redisstore.ErrUnavailable) || tries.n.Load() != before {
		t.Fatalf("TakeBatch in an outage: %v, %d calls", err, tries.n.Load()-before)
	}

	px := newProxy(t, redisOptions(t).Addr)
	opts := redisOptions(t)
	opts.Addr, opts.MaxRetries = px.addr(), -1
	l := newLimiter(t, newClientWith(t, opts), &redisstore.LimiterOptions{Prefix: p, Logger: (&logBuffer{}).logger(),
		Timeout: 500 * time.Millisecond})
	b = &scheduler.Batch{Extra: scheduler.Slot{Key: "user:u", Limit: 1}, Accounts: []scheduler.Slot{{Key: "account:a", Limit: 1}}}
	if err := l.TakeBatch(ctx, b); err != nil || !b.ExtraTaken || b.Taken != 0 {
		t.Fatalf("err %v, extra %v, taken %d", err, b.ExtraTaken, b.Taken)
	}
	px.setDown(true)
	b.Release(true, true, nil)
	if l.InFlight("user:u") != 0 || l.InFlight("account:a") != 0 {
		t.Fatal("slots counted in process after release")
	}
	// The release's attempt failed; it is retried in the background.
	next := &scheduler.Batch{Extra: scheduler.Slot{Key: "user:u", Limit: 1}}
	if err := l.TakeBatch(ctx, next); !errors.Is(err, redisstore.ErrUnavailable) {
		t.Fatalf("TakeBatch with Redis cut off: %v", err)
	}
	if h, _ := count(t, newLimiter(t, c, &redisstore.LimiterOptions{Prefix: p}), "user:u"); h != 1 {
		t.Fatalf("the lease left Redis while it was unreachable: %d", h)
	}
	px.setDown(false)
	waitFor(t, 10*time.Second, "the release retry", func() bool {
		hu, _ := count(t, l, "user:u")
		ha, _ := count(t, l, "account:a")
		return hu == 0 && ha == 0
	})
}

// On a client that shards keys, TakeBatch declines without a call.
func TestBatchDeclinesOnCluster(t *testing.T) {
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}})
	defer cc.Close()
	l := redisstore.NewLimiter(cc, nil)
	defer l.Close()
	b := &scheduler.Batch{Accounts: []scheduler.Slot{{Key: "account:a", Limit: 1}}}
	if err := l.TakeBatch(context.Background(), b); err == nil {
		t.Fatal("TakeBatch on a cluster client")
	}
}
