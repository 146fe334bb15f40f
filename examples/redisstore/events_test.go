package redisstore_test

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/relaykit/responsesrelay/examples/redisstore"
	"github.com/relaykit/responsesrelay/internal/relaytestenv"
	"github.com/relaykit/responsesrelay/scheduler"
)

// runEvents starts e.Run(sched) and stops it at cleanup.
func runEvents(t *testing.T, e *redisstore.Events, sched *scheduler.Scheduler) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := e.Run(ctx, sched); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
}

// waitSubscribers waits until n clients listen on the events channel.
func waitSubscribers(t *testing.T, c *redis.Client, p string, n int) {
	t.Helper()
	ch := p + "account-events"
	waitFor(t, 5*time.Second, "the event subscriptions", func() bool {
		return c.PubSubNumSub(context.Background(), ch).Val()[ch] == int64(n)
	})
}

func newEvents(t *testing.T, c redis.UniversalClient, o *redisstore.EventsOptions) *redisstore.Events {
	t.Helper()
	e := redisstore.NewEvents(c, o)
	t.Cleanup(func() { e.Close() })
	return e
}

// TestEventsShareCooldowns: a cooldown published by one instance reaches
// the other's scheduler and not its own; recovered ends it.
func TestEventsShareCooldowns(t *testing.T) {
	c := newClient(t)
	p := prefix(t, c)
	ea := newEvents(t, c, &redisstore.EventsOptions{Prefix: p, Instance: "a"})
	eb := newEvents(t, c, &redisstore.EventsOptions{Prefix: p, Instance: "b"})
	sa := &scheduler.Scheduler{Pool: scheduler.NewStaticPool()}
	sb := &scheduler.Scheduler{Pool: scheduler.NewStaticPool()}
	runEvents(t, ea, sa)
	runEvents(t, eb, sb)
	waitSubscribers(t, c, p, 2)
	ctx := context.Background()

	until := time.Now().Add(2 * time.Minute)
	ea.Publish(ctx, scheduler.AccountEvent{AccountID: "acct-1", Kind: scheduler.EventRateLimited, Until: until, Status: 429, Reason: "429"})
	waitFor(t, 5*time.Second, "the cooldown on the other instance", func() bool {
		return !relaytestenv.CoolingUntil(sb, "acct-1").IsZero()
	})
	if got := relaytestenv.CoolingUntil(sb, "acct-1"); got.Sub(until).Abs() > time.Second {
		t.Fatalf("cooling until %s, want about %s", got, until)
	}
	// A later message from b reaching a proves a has read its own first
	// message (one channel keeps order) and skipped it.
	eb.Publish(ctx, scheduler.AccountEvent{AccountID: "acct-2", Kind: scheduler.EventOverloaded, Until: time.Now().Add(time.Minute)})
	waitFor(t, 5*time.Second, "b's event on a", func() bool { return !relaytestenv.CoolingUntil(sa, "acct-2").IsZero() })
	if !relaytestenv.CoolingUntil(sa, "acct-1").IsZero() {
		t.Fatal("an instance applied its own event")
	}

	ea.Publish(ctx, scheduler.AccountEvent{AccountID: "acct-1", Kind: scheduler.EventRecovered})
	waitFor(t, 5*time.Second, "recovered on the other instance", func() bool {
		return relaytestenv.CoolingUntil(sb, "acct-1").IsZero()
	})
}

// TestEventsPublishNeverBlocks: with Redis hanging, Publish returns at once
// and drops what the buffer cannot hold, with a log line.
func TestEventsPublishNeverBlocks(t *testing.T) {
	// A server that accepts and never answers.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns sync.WaitGroup
	accepted := make(chan net.Conn, 16)
	conns.Go(func() {
		for {
			cn, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- cn
		}
	})
	t.Cleanup(func() {
		ln.Close()
		conns.Wait()
		close(accepted)
		for cn := range accepted {
			cn.Close()
		}
	})
	c := redis.NewClient(&redis.Options{Addr: ln.Addr().String(), MaxRetries: -1, DialerRetries: 1, PoolSize: 4,
		ContextTimeoutEnabled: true})
	t.Cleanup(func() { c.Close() })

	var logs logBuffer
	e := newEvents(t, c, &redisstore.EventsOptions{Buffer: 1, Timeout: 200 * time.Millisecond, Logger: logs.logger()})
	start := time.Now()
	for range 10 {
		e.Publish(context.Background(), scheduler.AccountEvent{AccountID: "a", Kind: scheduler.EventRateLimited, Until: time.Now().Add(time.Minute)})
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Fatalf("Publish blocked for %s", d)
	}
	if out := logs.String(); !strings.Contains(out, "buffer full") {
		t.Fatalf("no drop logged:\n%s", out)
	}
	start = time.Now()
	e.Close()
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Close took %s with Redis hanging", d)
	}
}
