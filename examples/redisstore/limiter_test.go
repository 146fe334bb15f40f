package redisstore_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/concurrency"
	"github.com/relaykit/responsesrelay/examples/internal/testservice"
	"github.com/relaykit/responsesrelay/examples/redisstore"
)

var (
	_ concurrency.SlotLimiter = (*redisstore.Limiter)(nil)
	_ concurrency.Waiter      = (*redisstore.Limiter)(nil)
	_ concurrency.Counter     = (*redisstore.Limiter)(nil)
)

func TestTryAcquireAndRelease(t *testing.T) {
	c := newClient(t)
	p := prefix(t, c)
	a := newLimiter(t, c, &redisstore.LimiterOptions{Prefix: p})
	b := newLimiter(t, c, &redisstore.LimiterOptions{Prefix: p}) // another instance
	ctx := context.Background()
	const key = "user:u1"

	r1, ok, err := a.TryAcquire(ctx, key, 2)
	if err != nil || !ok {
		t.Fatalf("first slot: ok=%v err=%v", ok, err)
	}
	r2, ok, err := b.TryAcquire(ctx, key, 2)
	if err != nil || !ok {
		t.Fatalf("second slot on the other instance: ok=%v err=%v", ok, err)
	}
	for _, l := range []*redisstore.Limiter{a, b} {
		if r, ok, err := l.TryAcquire(ctx, key, 2); err != nil || ok || r != nil {
			t.Fatalf("third slot granted over the limit: ok=%v err=%v", ok, err)
		}
	}
	if held, _ := count(t, a, key); held != 2 {
		t.Fatalf("Redis holds %d leases, want 2", held)
	}
	if a.InFlight(key) != 1 || b.InFlight(key) != 1 {
		t.Fatalf("InFlight a=%d b=%d, want 1 each", a.InFlight(key), b.InFlight(key))
	}

	r1()
	r1() // idempotent: releases one slot, not two
	if held, _ := count(t, a, key); held != 1 {
		t.Fatalf("after a double release Redis holds %d leases, want 1", held)
	}
	if a.InFlight(key) != 0 {
		t.Fatalf("InFlight after release = %d", a.InFlight(key))
	}
	r3, ok, err := b.TryAcquire(ctx, key, 2)
	if err != nil || !ok {
		t.Fatalf("slot after release: ok=%v err=%v", ok, err)
	}
	if _, ok, _ := a.TryAcquire(ctx, key, 2); ok {
		t.Fatal("slot granted over the limit after release")
	}
	r2()
	r3()
	if held, queued := count(t, a, key); held != 0 || queued != 0 {
		t.Fatalf("after all releases: held=%d queued=%d", held, queued)
	}
	// Another key is independent.
	r4, ok, err := a.TryAcquire(ctx, "user:u2", 1)
	if err != nil || !ok {
		t.Fatalf("other key: ok=%v err=%v", ok, err)
	}
	r4()
}

func TestUnlimitedNeverAsksRedis(t *testing.T) {
	// Nothing listens there: any Redis call would fail.
	l := newLimiter(t, unreachableClient(t, testservice.ClosedAddr(t)), nil)
	for _, limit := range []int{0, -1} {
		r, ok, err := l.TryAcquire(context.Background(), "user:u", limit)
		if err != nil || !ok {
			t.Fatalf("TryAcquire limit %d: ok=%v err=%v", limit, ok, err)
		}
		r()
		r, err = l.Acquire(context.Background(), "user:u", limit, concurrency.WaitOptions{})
		if err != nil {
			t.Fatalf("Acquire limit %d: %v", limit, err)
		}
		r()
	}
}

// TestAcquireWokenByRelease: a waiter on one instance is woken by the
// release on another through pub/sub, not by polling (its poll interval is
// an hour).
func TestAcquireWokenByRelease(t *testing.T) {
	c := newClient(t)
	p := prefix(t, c)
	a := newLimiter(t, c, &redisstore.LimiterOptions{Prefix: p})
	b := newLimiter(t, c, &redisstore.LimiterOptions{Prefix: p, PollInterval: time.Hour})
	ctx := context.Background()
	const key = "user:u1"

	hold, ok, err := a.TryAcquire(ctx, key, 1)
	if err != nil || !ok {
		t.Fatalf("ok=%v err=%v", ok, err)
	}
	got := make(chan error, 1)
	var release func()
	go func() {
		var err error
		release, err = b.Acquire(ctx, key, 1, concurrency.WaitOptions{MaxWaiters: 5, Timeout: 30 * time.Second})
		got <- err
	}()
	channel := p + "slot:{" + key + "}:free"
	waitFor(t, 5*time.Second, "the waiter to queue and subscribe", func() bool {
		_, queued := count(t, a, key)
		subs := c.PubSubNumSub(ctx, channel).Val()[channel]
		return queued == 1 && subs == 1 && b.Waiting(key) == 1
	})
	start := time.Now()
	hold()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiter was not woken by the release")
	}
	t.Logf("woken %s after the release", time.Since(start))
	if held, queued := count(t, a, key); held != 1 || queued != 0 {
		t.Fatalf("held=%d queued=%d, want 1 and 0", held, queued)
	}
	release()
	waitFor(t, 5*time.Second, "the unsubscribe", func() bool {
		return c.PubSubNumSub(ctx, channel).Val()[channel] == 0
	})
}

// TestFIFOAcrossInstances: waiters on two instances get slots in the order
// they queued.
func TestFIFOAcrossInstances(t *testing.T) {
	c := newClient(t)
	p := prefix(t, c)
	a := newLimiter(t, c, &redisstore.LimiterOptions{Prefix: p})
	b := newLimiter(t, c, &redisstore.LimiterOptions{Prefix: p})
	ctx := context.Background()
	const key = "user:fifo"
	o := concurrency.WaitOptions{MaxWaiters: 10, Timeout: 30 * time.Second}

	holder, ok, err := a.TryAcquire(ctx, key, 1)
	if err != nil || !ok {
		t.Fatalf("ok=%v err=%v", ok, err)
	}
	type grant struct {
		who     int
		release func()
		err     error
	}
	grants := make(chan grant, 4)
	for i, l := range []*redisstore.Limiter{a, b, a, b} {
		go func() {
			r, err := l.Acquire(ctx, key, 1, o)
			grants <- grant{i, r, err}
		}()
		waitFor(t, 5*time.Second, "waiter to queue", func() bool {
			_, queued := count(t, a, key)
			return queued == i+1
		})
	}
	release := holder
	for want := range 4 {
		release()
		select {
		case g := <-grants:
			if g.err != nil {
				t.Fatalf("waiter %d: %v", g.who, g.err)
			}
			if g.who != want {
				t.Fatalf("waiter %d got the slot before waiter %d", g.who, want)
			}
			release = g.release
		case <-time.After(10 * time.Second):
			t.Fatalf("waiter %d never got the slot", want)
		}
	}
	release()
	if held, queued := count(t, a, key); held != 0 || queued != 0 {
		t.Fatalf("held=%d queued=%d", held, queued)
	}
}

// TestTryAcquireDoesNotOvertake: a slot that frees without a release
// message (an expired lease) still goes to the queued waiter, not to a
// TryAcquire that happens to ask first.
func TestTryAcquireDoesNotOvertake(t *testing.T) {
	c := newClient(t)
	p := prefix(t, c)
	a := newLimiter(t, c, &redisstore.LimiterOptions{Prefix: p, PollInterval: 50 * time.Millisecond})
	b := newLimiter(t, c, &redisstore.LimiterOptions{Prefix: p})
	ctx := context.Background()
	const key = "account:x"

	holder, ok, err := b.TryAcquire(ctx, key, 1)
	if err != nil || !ok {
		t.Fatalf("ok=%v err=%v", ok, err)
	}
	got := make(chan func(), 1)
	go func() {
		r, err := a.Acquire(ctx, key, 1, concurrency.WaitOptions{MaxWaiters: 1, Timeout: 30 * time.Second})
		if err != nil {
			t.Error(err)
		}
		got <- r
	}()
	waitFor(t, 5*time.Second, "the waiter to queue", func() bool { _, q := count(t, a, key); return q == 1 })
	// The holder's lease vanishes as if it had expired: no message.
	if err := c.Del(ctx, p+"slot:{"+key+"}").Err(); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := b.TryAcquire(ctx, key, 1); ok || err != nil {
		t.Fatalf("TryAcquire overtook the waiter: ok=%v err=%v", ok, err)
	}
	select {
	case r := <-got:
		r()
	case <-time.After(10 * time.Second):
		t.Fatal("the waiter did not find the freed slot by polling")
	}
	holder() // its lease is gone already: a no-op
	if held, queued := count(t, a, key); held != 0 || queued != 0 {
		t.Fatalf("held=%d queued=%d", held, queued)
	}
}

func TestQueueFull(t *testing.T) {
	c := newClient(t)
	p := prefix(t, c)
	a := newLimiter(t, c, &redisstore.LimiterOptions{Prefix: p})
	b := newLimiter(t, c, &redisstore.LimiterOptions{Prefix: p})
	ctx := context.Background()
	const key = "user:q"

	holder, _, _ := a.TryAcquire(ctx, key, 1)
	defer holder()
	if _, err := b.Acquire(ctx, key, 1, concurrency.WaitOptions{MaxWaiters: -1}); !errors.Is(err, concurrency.ErrQueueFull) {
		t.Fatalf("MaxWaiters -1 on a full key: %v, want ErrQueueFull", err)
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := a.Acquire(wctx, key, 1, concurrency.WaitOptions{MaxWaiters: 1})
		done <- err
	}()
	waitFor(t, 5*time.Second, "the waiter to queue", func() bool { _, q := count(t, a, key); return q == 1 })
	// The bound counts the waiters of every instance.
	if _, err := b.Acquire(ctx, key, 1, concurrency.WaitOptions{MaxWaiters: 1, Timeout: time.Minute}); !errors.Is(err, concurrency.ErrQueueFull) {
		t.Fatalf("second waiter: %v, want ErrQueueFull", err)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled waiter: %v", err)
	}
}

func TestWaitTimeout(t *testing.T) {
	c := newClient(t)
	p := prefix(t, c)
	l := newLimiter(t, c, &redisstore.LimiterOptions{Prefix: p})
	ctx := context.Background()
	const key = "user:t"

	holder, _, _ := l.TryAcquire(ctx, key, 1)
	defer holder()
	start := time.Now()
	_, err := l.Acquire(ctx, key, 1, concurrency.WaitOptions{MaxWaiters: 5, Timeout: 150 * time.Millisecond})
	if !errors.Is(err, concurrency.ErrWaitTimeout) {
		t.Fatalf("err = %v, want ErrWaitTimeout", err)
	}
	if d := time.Since(start); d < 150*time.Millisecond || d > 5*time.Second {
		t.Fatalf("gave up after %s", d)
	}
	if _, queued := count(t, l, key); queued != 0 || l.Waiting(key) != 0 {
		t.Fatalf("the ticket outlived the wait: queued=%d waiting=%d", queued, l.Waiting(key))
	}
}

func TestContextCancel(t *testing.T) {
	c := newClient(t)
	p := prefix(t, c)
	l := newLimiter(t, c, &redisstore.LimiterOptions{Prefix: p})
	const key = "user:c"

	holder, _, _ := l.TryAcquire(context.Background(), key, 1)
	defer holder()

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.Acquire(ctx, key, 1, concurrency.WaitOptions{MaxWaiters: 5}); !errors.Is(err, context.Canceled) {
		t.Fatalf("ended ctx: %v", err)
	}

	ctx, cancel = context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := l.Acquire(ctx, key, 1, concurrency.WaitOptions{MaxWaiters: 5})
		done <- err
	}()
	waitFor(t, 5*time.Second, "the waiter to queue", func() bool { return l.Waiting(key) == 1 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled waiter: %v", err)
	}
	if _, queued := count(t, l, key); queued != 0 {
		t.Fatalf("the ticket outlived the wait: queued=%d", queued)
	}
}

func TestCloseEndsWaits(t *testing.T) {
	c := newClient(t)
	p := prefix(t, c)
	a := newLimiter(t, c, &redisstore.LimiterOptions{Prefix: p})
	l := redisstore.NewLimiter(c, &redisstore.LimiterOptions{Prefix: p})
	ctx := context.Background()
	const key = "user:close"

	holder, _, _ := a.TryAcquire(ctx, key, 1)
	defer holder()
	done := make(chan error, 1)
	go func() {
		_, err := l.Acquire(ctx, key, 1, concurrency.WaitOptions{MaxWaiters: 5})
		done <- err
	}()
	waitFor(t, 5*time.Second, "the waiter to queue", func() bool { return l.Waiting(key) == 1 })
	l.Close()
	if err := <-done; !errors.Is(err, redisstore.ErrClosed) {
		t.Fatalf("waiter after Close: %v", err)
	}
	if _, _, err := l.TryAcquire(ctx, key, 1); !errors.Is(err, redisstore.ErrClosed) {
		t.Fatalf("TryAcquire after Close: %v", err)
	}
	if _, queued := count(t, a, key); queued != 0 {
		t.Fatalf("queued=%d after Close", queued)
	}
}

// TestLeaseRefresh: a slot held for several lease TTLs stays held, because
// the refresher keeps pushing its expiry.
func TestLeaseRefresh(t *testing.T) {
	c := newClient(t)
	p := prefix(t, c)
	const ttl = 300 * time.Millisecond
	a := newLimiter(t, c, &redisstore.LimiterOptions{Prefix: p, LeaseTTL: ttl})
	b := newLimiter(t, c, &redisstore.LimiterOptions{Prefix: p})
	ctx := context.Background()
	const key = "user:long"

	release, ok, err := a.TryAcquire(ctx, key, 1)
	if err != nil || !ok {
		t.Fatalf("ok=%v err=%v", ok, err)
	}
	start := time.Now()
	waitFor(t, 10*time.Second, "four lease TTLs to pass", func() bool {
		if held, _ := count(t, b, key); held != 1 {
			t.Fatalf("the lease expired after %s although its holder is alive", time.Since(start))
		}
		return time.Since(start) > 4*ttl
	})
	if _, ok, _ := b.TryAcquire(ctx, key, 1); ok {
		t.Fatal("another instance took the refreshed slot")
	}
	release()
}

// TestCrashedInstanceSlotsExpire: an instance that stops refreshing (here
// Close without releasing, as a crash would) loses its slot within the
// lease TTL, and a waiter on another instance gets it by polling.
func TestCrashedInstanceSlotsExpire(t *testing.T) {
	c := newClient(t)
	p := prefix(t, c)
	const ttl = 500 * time.Millisecond
	crashed := redisstore.NewLimiter(c, &redisstore.LimiterOptions{Prefix: p, LeaseTTL: ttl})
	other := newLimiter(t, c, &redisstore.LimiterOptions{Prefix: p})
	ctx := context.Background()
	const key = "user:crash"

	stale, ok, err := crashed.TryAcquire(ctx, key, 1)
	if err != nil || !ok {
		t.Fatalf("ok=%v err=%v", ok, err)
	}
	if _, ok, _ := other.TryAcquire(ctx, key, 1); ok {
		t.Fatal("slot granted twice")
	}
	crashed.Close() // the refresher stops; the lease is not released
	died := time.Now()
	release, err := other.Acquire(ctx, key, 1, concurrency.WaitOptions{MaxWaiters: 5, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(died)
	t.Logf("slot freed %s after the holder stopped (lease TTL %s)", took, ttl)
	if took > ttl+time.Second {
		t.Fatalf("slot freed after %s, want within the TTL %s (plus a poll)", took, ttl)
	}
	stale() // a late release of the dead lease must not free the new one
	if held, _ := count(t, other, key); held != 1 {
		t.Fatalf("held=%d after the stale release, want 1", held)
	}
	release()
}

func TestFailClosed(t *testing.T) {
	var logs logBuffer
	l := newLimiter(t, unreachableClient(t, testservice.ClosedAddr(t)), &redisstore.LimiterOptions{Logger: logs.logger(), Timeout: time.Second})
	ctx := context.Background()

	r, ok, err := l.TryAcquire(ctx, "user:u", 1)
	if !errors.Is(err, redisstore.ErrUnavailable) || ok || r != nil {
		t.Fatalf("TryAcquire: ok=%v err=%v, want ErrUnavailable", ok, err)
	}
	if !strings.Contains(err.Error(), `"user:u"`) {
		t.Errorf("error does not name the key: %v", err)
	}
	if _, err := l.Acquire(ctx, "user:u", 1, concurrency.WaitOptions{MaxWaiters: 5, Timeout: time.Minute}); !errors.Is(err, redisstore.ErrUnavailable) {
		t.Fatalf("Acquire: %v, want ErrUnavailable", err)
	}
	if l.InFlight("user:u") != 0 {
		t.Fatalf("InFlight = %d", l.InFlight("user:u"))
	}
	if out := logs.String(); !strings.Contains(out, "Redis unavailable, failing closed") {
		t.Fatalf("no outage log line:\n%s", out)
	}
}

func TestFailOpen(t *testing.T) {
	var logs logBuffer
	l := newLimiter(t, unreachableClient(t, testservice.ClosedAddr(t)),
		&redisstore.LimiterOptions{Logger: logs.logger(), FailOpen: true, Timeout: time.Second, PollInterval: 20 * time.Millisecond})
	ctx := context.Background()
	const key = "user:u"

	r1, ok, err := l.TryAcquire(ctx, key, 1)
	if err != nil || !ok {
		t.Fatalf("TryAcquire: ok=%v err=%v, want a local slot", ok, err)
	}
	if l.InFlight(key) != 1 {
		t.Fatalf("InFlight = %d", l.InFlight(key))
	}
	// The limit still holds within this process.
	if _, ok, err := l.TryAcquire(ctx, key, 1); ok || err != nil {
		t.Fatalf("second local slot: ok=%v err=%v", ok, err)
	}
	if _, err := l.Acquire(ctx, key, 1, concurrency.WaitOptions{MaxWaiters: 5, Timeout: 100 * time.Millisecond}); !errors.Is(err, concurrency.ErrWaitTimeout) {
		t.Fatalf("Acquire on a full key: %v, want ErrWaitTimeout", err)
	}
	got := make(chan func(), 1)
	go func() {
		r, err := l.Acquire(ctx, key, 1, concurrency.WaitOptions{MaxWaiters: 5, Timeout: 10 * time.Second})
		if err != nil {
			t.Error(err)
		}
		got <- r
	}()
	waitFor(t, 5*time.Second, "the local waiter", func() bool { return l.Waiting(key) == 1 })
	r1()
	r2 := <-got
	r2()
	if l.InFlight(key) != 0 {
		t.Fatalf("InFlight after release = %d", l.InFlight(key))
	}
	if out := logs.String(); !strings.Contains(out, "failing open") {
		t.Fatalf("no outage log line:\n%s", out)
	}
}

// TestOutageRelease: a slot released while Redis is unreachable leaves
// Redis once it is back; fail-closed admission errors during the outage
// and works again after it.
func TestOutageRelease(t *testing.T) {
	opts := redisOptions(t)
	direct := newClient(t)
	p := prefix(t, direct)
	px := newProxy(t, opts.Addr)
	viaProxy := *opts
	viaProxy.Addr = px.addr()
	viaProxy.MaxRetries = -1
	viaProxy.DialerRetries = 1
	c := newClientWith(t, &viaProxy)
	var logs logBuffer
	l := newLimiter(t, c, &redisstore.LimiterOptions{Prefix: p, Logger: logs.logger(), Timeout: 500 * time.Millisecond})
	watch := newLimiter(t, direct, &redisstore.LimiterOptions{Prefix: p})
	ctx := context.Background()
	const key = "user:outage"

	release, ok, err := l.TryAcquire(ctx, key, 1)
	if err != nil || !ok {
		t.Fatalf("ok=%v err=%v", ok, err)
	}
	px.setDown(true)
	release() // fails now; retried in the background
	if l.InFlight(key) != 0 {
		t.Fatalf("InFlight = %d after release", l.InFlight(key))
	}
	if held, _ := count(t, watch, key); held != 1 {
		t.Fatalf("held=%d during the outage, want the unreleased lease", held)
	}
	if _, _, err := l.TryAcquire(ctx, key, 1); !errors.Is(err, redisstore.ErrUnavailable) {
		t.Fatalf("TryAcquire during the outage: %v", err)
	}
	px.setDown(false)
	waitFor(t, 10*time.Second, "the background release", func() bool {
		held, _ := count(t, watch, key)
		return held == 0
	})
	waitFor(t, 10*time.Second, "a slot after the outage", func() bool {
		r, ok, err := l.TryAcquire(ctx, key, 1)
		if ok {
			r()
		}
		return err == nil && ok
	})
	if out := logs.String(); !strings.Contains(out, "Redis reachable again") {
		t.Fatalf("no recovery log line:\n%s", out)
	}
}

// TestLostLeaseIsLogged: a lease that vanished from Redis while held (an
// outage longer than the TTL) is reported once and not re-added.
func TestLostLeaseIsLogged(t *testing.T) {
	c := newClient(t)
	p := prefix(t, c)
	var logs logBuffer
	l := newLimiter(t, c, &redisstore.LimiterOptions{Prefix: p, LeaseTTL: 300 * time.Millisecond, Logger: logs.logger()})
	ctx := context.Background()
	const key = "user:lost"

	release, ok, err := l.TryAcquire(ctx, key, 1)
	if err != nil || !ok {
		t.Fatalf("ok=%v err=%v", ok, err)
	}
	c.Del(ctx, p+"slot:{"+key+"}")
	waitFor(t, 5*time.Second, "the lost lease to be reported", func() bool {
		return strings.Contains(logs.String(), "expired in Redis while still held")
	})
	if held, _ := count(t, l, key); held != 0 {
		t.Fatalf("the lost lease came back: held=%d", held)
	}
	if l.InFlight(key) != 1 {
		t.Fatalf("InFlight = %d: the turn still runs", l.InFlight(key))
	}
	release()
	if l.InFlight(key) != 0 {
		t.Fatalf("InFlight = %d after release", l.InFlight(key))
	}
}

// TestRefreshAfterScriptFlush: leases are still refreshed after Redis
// forgot its scripts (a restart, SCRIPT FLUSH).
func TestRefreshAfterScriptFlush(t *testing.T) {
	c := newClient(t)
	p := prefix(t, c)
	const ttl = 300 * time.Millisecond
	l := newLimiter(t, c, &redisstore.LimiterOptions{Prefix: p, LeaseTTL: ttl})
	ctx := context.Background()
	const key = "user:flush"

	release, ok, err := l.TryAcquire(ctx, key, 1)
	if err != nil || !ok {
		t.Fatalf("ok=%v err=%v", ok, err)
	}
	defer release()
	if err := c.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitFor(t, 10*time.Second, "three lease TTLs to pass", func() bool {
		if held, _ := count(t, l, key); held != 1 {
			t.Fatalf("the lease expired after %s", time.Since(start))
		}
		return time.Since(start) > 3*ttl
	})
}
