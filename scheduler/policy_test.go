package scheduler

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/concurrency"
)

// Each HealthPolicy field moves the cooldown it names; a negative one turns
// it off, with no event.
func TestHealthPolicy(t *testing.T) {
	fail3 := []Outcome{status(500, ""), status(500, ""), status(500, "")}
	tests := []struct {
		name     string
		policy   HealthPolicy
		outcomes []Outcome
		want     time.Duration
		kind     string // "" no event
	}{
		{"auth 401", HealthPolicy{AuthCooldown: time.Minute}, []Outcome{status(401, "{}")}, time.Minute, EventUnauthorized},
		{"auth 403", HealthPolicy{AuthCooldown: time.Minute}, []Outcome{status(403, "{}")}, time.Minute, EventForbidden},
		{"auth off", HealthPolicy{AuthCooldown: -1}, []Outcome{status(401, "{}")}, 0, ""},
		{"payment 402", HealthPolicy{PaymentCooldown: 2 * time.Minute}, []Outcome{status(402, "{}")}, 2 * time.Minute, EventPaymentRequired},
		{"payment quota", HealthPolicy{PaymentCooldown: 2 * time.Minute}, []Outcome{status(429, "insufficient_quota")}, 2 * time.Minute, EventPaymentRequired},
		{"payment off", HealthPolicy{PaymentCooldown: -1}, []Outcome{status(402, "{}")}, 0, ""},
		{"overload", HealthPolicy{OverloadCooldown: 3 * time.Second}, []Outcome{status(529, "")}, 3 * time.Second, EventOverloaded},
		{"overload off", HealthPolicy{OverloadCooldown: -1}, []Outcome{{Kind: OutcomeOverloaded}}, 0, ""},
		{"unhealthy after 1", HealthPolicy{UnhealthyAfter: 1, UnhealthyCooldown: time.Second}, fail3[:1], time.Second, EventUnhealthy},
		{"unhealthy never", HealthPolicy{UnhealthyAfter: -1}, fail3, 0, ""},
		{"unhealthy cooldown off", HealthPolicy{UnhealthyCooldown: -1}, fail3, 0, ""},
		{"backoff", HealthPolicy{RateLimitBackoff: time.Second}, []Outcome{status(429, ""), status(429, "")}, 2 * time.Second, EventRateLimited},
		{"backoff off", HealthPolicy{RateLimitBackoff: -1}, []Outcome{status(429, "")}, 0, ""},
		{"backoff off, reset announced", HealthPolicy{RateLimitBackoff: -1}, []Outcome{status(429, "", "Retry-After", "9")}, 9 * time.Second, EventRateLimited},
		{"max cooldown", HealthPolicy{MaxCooldown: time.Minute}, []Outcome{status(402, "{}")}, time.Minute, EventPaymentRequired},
		{"no cap", HealthPolicy{MaxCooldown: -1}, []Outcome{status(429, "", "Retry-After", "36000")}, 10 * time.Hour, EventRateLimited},
		{"default cap", HealthPolicy{}, []Outcome{status(429, "", "Retry-After", "36000")}, 2 * time.Hour, EventRateLimited},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, acct("a"))
			f.s.Health = tt.policy
			for _, o := range tt.outcomes {
				f.s.Observe("a", o)
			}
			if got := f.cooling("a"); got != tt.want {
				t.Fatalf("cooldown %s, want %s", got, tt.want)
			}
			evs := f.events.take()
			if tt.kind == "" && len(evs) != 0 || tt.kind != "" && (len(evs) == 0 || evs[len(evs)-1].Kind != tt.kind) {
				t.Fatalf("events %+v, want kind %q", evs, tt.kind)
			}
		})
	}
}

// Apply caps a remote cooldown at MaxCooldown, or not at all when it is
// negative.
func TestHealthPolicyApplyCap(t *testing.T) {
	for _, tt := range []struct {
		max, want time.Duration
	}{{0, 2 * time.Hour}, {time.Minute, time.Minute}, {-1, 5 * time.Hour}} {
		f := newFixture(t, acct("a"))
		f.s.Health.MaxCooldown = tt.max
		f.s.Apply(AccountEvent{AccountID: "a", Kind: EventRateLimited, Until: f.clock.Now().Add(5 * time.Hour)})
		if got := f.cooling("a"); got != tt.want {
			t.Errorf("MaxCooldown %s: cooldown %s, want %s", tt.max, got, tt.want)
		}
	}
}

func TestHealthPolicyErrorHalfLife(t *testing.T) {
	for _, tt := range []struct {
		halfLife time.Duration
		want     float64
	}{{0, 0.1}, {2 * time.Minute, 0.2 / 1.4142135623730951}, {-1, 0.2}} {
		f := newFixture(t, acct("a"))
		f.s.Health.ErrorHalfLife = tt.halfLife
		f.s.Observe("a", status(500, ""))
		f.clock.Advance(time.Minute)
		var got float64
		for _, as := range f.s.Snapshot() {
			if as.ID == "a" {
				got = as.ErrorRate
			}
		}
		if d := got - tt.want; d > 1e-9 || d < -1e-9 {
			t.Errorf("ErrorHalfLife %s: error rate %v a minute after one failure, want %v", tt.halfLife, got, tt.want)
		}
	}
}

// A sticky account slower than SlowTTFT is left; with SlowTTFT negative it
// keeps its turns.
func TestHealthPolicySlowTTFT(t *testing.T) {
	for _, tt := range []struct {
		slow time.Duration
		ttft time.Duration
		stay bool
	}{{0, 16 * time.Second, false}, {0, 14 * time.Second, true}, {time.Second, 2 * time.Second, false}, {-1, time.Hour, true}} {
		f := newFixture(t, acct("a"), acct("b"))
		f.s.Health.SlowTTFT = tt.slow
		q := Request{Group: "g", APIKeyID: "k", SessionKey: "s"}
		if err := f.s.Bind(context.Background(), q, "a", ""); err != nil {
			t.Fatal(err)
		}
		f.s.Observe("a", Outcome{Kind: OutcomeSuccess, TTFT: tt.ttft})
		if got := f.pick(t, q) == "a"; got != tt.stay {
			t.Errorf("SlowTTFT %s, TTFT %s: stayed %v, want %v", tt.slow, tt.ttft, got, tt.stay)
		}
	}
}

// Fields where off means nothing panic at first use, naming the field.
func TestNegativeKnobsPanic(t *testing.T) {
	for _, tt := range []struct {
		field string
		set   func(*Scheduler)
	}{
		{"Scheduler.StickyTTL", func(s *Scheduler) { s.StickyTTL = -1 }},
		{"Scheduler.TopK", func(s *Scheduler) { s.TopK = -1 }},
	} {
		func() {
			defer func() {
				if r := recover(); r != "responsesrelay: "+tt.field+" must not be negative" {
					t.Errorf("%s: panic %v", tt.field, r)
				}
			}()
			f := newFixture(t, acct("a"))
			tt.set(f.s)
			f.s.Snapshot()
		}()
	}
}

// AccountWait: zero MaxWaiters queues (100 by default), negative fails at
// once.
func TestAccountWaitZeroAndNegative(t *testing.T) {
	for _, tt := range []struct {
		maxWaiters int
		queues     bool
	}{{0, true}, {-1, false}} {
		f := newFixture(t, &Account{ID: "a", Concurrency: 1})
		lim := concurrency.NewMemory()
		f.s.Limiter = lim
		f.s.AccountWait = concurrency.WaitOptions{MaxWaiters: tt.maxWaiters}
		q := Request{Group: "g", Wait: true}
		held, err := f.s.Select(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			sel, err := f.s.Select(ctx, q)
			if sel != nil {
				sel.Release()
			}
			errc <- err
		}()
		if tt.queues {
			for lim.Waiting("account:a") != 1 {
				runtime.Gosched()
				select {
				case err := <-errc:
					t.Fatalf("MaxWaiters 0: Select returned %v instead of waiting", err)
				default:
				}
			}
			cancel()
			if err := <-errc; !errors.Is(err, context.Canceled) {
				t.Errorf("MaxWaiters 0: %v, want the wait to end with ctx", err)
			}
		} else if err := <-errc; !errors.Is(err, concurrency.ErrQueueFull) {
			t.Errorf("MaxWaiters -1: %v, want ErrQueueFull", err)
		}
		cancel()
		held.Release()
		if n := accountSlots(lim, "a"); n != 0 {
			t.Errorf("%d slots left", n)
		}
	}
}

// A hook left behind at EventTimeout that panics later is still recovered
// and logged.
func TestOnAccountEventLatePanicLogged(t *testing.T) {
	f := newFixture(t, acct("a"))
	logs := &lockedWriter{w: new(bytes.Buffer)}
	f.s.Logger = slog.New(slog.NewTextHandler(logs, nil))
	logged := func(s string) bool {
		logs.mu.Lock()
		defer logs.mu.Unlock()
		return strings.Contains(logs.w.String(), s)
	}
	f.s.EventTimeout = time.Millisecond
	release := make(chan struct{})
	f.s.OnAccountEvent = func(context.Context, AccountEvent) {
		<-release
		panic("late host bug")
	}
	f.s.Observe("a", status(401, "{}"))
	if !logged("did not return in time") {
		t.Fatal("the abandoned hook was not logged")
	}
	close(release)
	deadline := time.Now().Add(5 * time.Second)
	for !logged("late host bug") {
		if time.Now().After(deadline) {
			t.Fatal("the late panic was not logged")
		}
		runtime.Gosched()
	}
}
