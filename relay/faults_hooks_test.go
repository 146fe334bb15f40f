package relay_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/concurrency"
	"github.com/relaykit/responsesrelay/relay"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/relaykit/responsesrelay/scheduler"
)

// stuckHook returns a channel that a hook blocks on, ignoring its context,
// and a counter of calls that entered it. The channel is closed when the
// test ends, so that the abandoned hook goroutines exit before the leak
// check.
func stuckHook(t *testing.T) (<-chan struct{}, *atomic.Int64) {
	ch := make(chan struct{})
	t.Cleanup(func() { close(ch) })
	return ch, new(atomic.Int64)
}

// hangingPool blocks its first call to Accounts until release is closed;
// every call lists the accounts of next.
type hangingPool struct {
	release <-chan struct{}
	entered *atomic.Int64
	next    scheduler.Pool
}

func (p hangingPool) Accounts(ctx context.Context, group string) ([]*scheduler.Account, error) {
	if p.entered.Add(1) == 1 {
		<-p.release
	}
	return p.next.Accounts(context.Background(), group)
}

type panickingPool struct{}

func (panickingPool) Accounts(context.Context, string) ([]*scheduler.Account, error) {
	panic("pool bug")
}

type credsFunc func(ctx context.Context, a *scheduler.Account) (string, error)

func (f credsFunc) Token(ctx context.Context, a *scheduler.Account) (string, error) { return f(ctx, a) }

// TestFaultHookHangs: a hook that ignores its context is abandoned after
// HookTimeout; the client gets the documented answer, and no slot stays
// held by the turn.
func TestFaultHookHangs(t *testing.T) {
	const bound = 50 * time.Millisecond
	t.Run("authenticate", func(t *testing.T) {
		e := newEnv(t, "a")
		stuck, n := stuckHook(t)
		e.h.HookTimeout = bound
		e.h.Authenticate = func(*http.Request) (*relay.Subject, error) { n.Add(1); <-stuck; return nil, nil }
		r := e.do(textReq)
		if r.status != 503 || r.header.Get("Retry-After") == "" || n.Load() != 1 {
			t.Fatalf("status %d, calls %d", r.status, n.Load())
		}
		if _, msg, _, _ := apiErr(t, r.body); !strings.Contains(msg, "Authentication service unavailable") {
			t.Fatalf("message %q", msg)
		}
	})
	t.Run("billing gate", func(t *testing.T) {
		e := newEnv(t, "a")
		e.subj.Concurrency = 1
		stuck, n := stuckHook(t)
		e.h.HookTimeout = bound
		e.h.Billing = billing.GateFunc(func(context.Context, billing.Request) error { n.Add(1); <-stuck; return nil })
		for _, body := range []string{textReq, streamReq} {
			if r := e.do(body); r.status != 503 {
				t.Fatalf("status %d", r.status)
			}
		}
		if n.Load() != 2 || len(e.up.Requests()) != 0 || len(e.sink.all()) != 0 {
			t.Fatalf("calls %d, upstream %d, records %d", n.Load(), len(e.up.Requests()), len(e.sink.all()))
		}
		if !strings.Contains(e.logs.String(), "billing gate failed") {
			t.Fatalf("not logged:\n%s", e.logs.String())
		}
	})
	t.Run("pool", func(t *testing.T) {
		e := newEnv(t, "a")
		stuck, n := stuckHook(t)
		e.h.HookTimeout = bound
		e.sched.AccountWait.Timeout = bound
		e.sched.Pool = hangingPool{release: stuck, entered: n, next: e.pool}
		if r := e.do(streamReq); r.status != 503 {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		if n.Load() != 1 || len(e.up.Requests()) != 0 {
			t.Fatalf("calls %d, upstream %d", n.Load(), len(e.up.Requests()))
		}
	})
	t.Run("credentials", func(t *testing.T) {
		e := newEnv(t)
		e.addAccount(&scheduler.Account{ID: "slow", Priority: 0})
		e.addAccount(&scheduler.Account{ID: "good", Priority: 1})
		stuck, n := stuckHook(t)
		e.h.HookTimeout = bound
		keys := e.keys
		e.h.Credentials = credsFunc(func(ctx context.Context, a *scheduler.Account) (string, error) {
			if a.ID == "slow" {
				n.Add(1)
				<-stuck
			}
			return keys.Token(ctx, a)
		})
		r := e.do(textReq)
		if r.status != 200 || n.Load() != 1 {
			t.Fatalf("status %d, calls %d", r.status, n.Load())
		}
		if recs := e.sink.all(); len(recs) != 1 || recs[0].AccountID != "good" || recs[0].Attempts != 2 {
			t.Fatalf("records %+v", recs)
		}
	})
	t.Run("usage sink", func(t *testing.T) {
		e := newEnv(t, "a")
		stuck, n := stuckHook(t)
		e.h.HookTimeout = bound
		e.h.Usage = billing.SinkFunc(func(context.Context, billing.Usage) error { n.Add(1); <-stuck; return nil })
		// The stream ends (EOF) although the sink never returns.
		r := e.do(streamReq)
		if r.lastType() != "response.completed" || n.Load() != 1 {
			t.Fatalf("events %v, calls %d", r.types(), n.Load())
		}
		if logs := e.logs.String(); !strings.Contains(logs, "usage sink did not return in time") || !strings.Contains(logs, `input_tokens\":12`) {
			t.Fatalf("the record is not in the log:\n%s", logs)
		}
	})
	t.Run("on account event", func(t *testing.T) {
		e := newPriorityEnv(t)
		stuck, n := stuckHook(t)
		e.sched.EventTimeout = bound
		e.sched.Logger = e.h.Logger
		e.sched.OnAccountEvent = func(context.Context, scheduler.AccountEvent) { n.Add(1); <-stuck }
		e.up.Script("bad", relaytest.Step{Status: 429})
		r := e.do(textReq)
		if r.status != 200 || n.Load() != 1 {
			t.Fatalf("status %d, calls %d", r.status, n.Load())
		}
		if coolingUntil(e.sched, "bad").IsZero() {
			t.Fatal("the 429 was not applied while the hook hung")
		}
		if !strings.Contains(e.logs.String(), "OnAccountEvent did not return") {
			t.Fatalf("not logged:\n%s", e.logs.String())
		}
	})
}

// TestFaultHookHangClientGone: a client that leaves while a hook hangs
// (with the default, long HookTimeout) ends the turn at once.
func TestFaultHookHangClientGone(t *testing.T) {
	// Authenticate is not here: net/http notices a client leaving only
	// once the request body has been read, which is after Authenticate;
	// HookTimeout bounds it (TestFaultHookHangs).
	for _, hook := range []string{"billing", "pool", "credentials"} {
		t.Run(hook, func(t *testing.T) {
			e := newEnv(t, "a")
			e.subj.Concurrency = 1
			stuck, n := stuckHook(t)
			switch hook {
			case "billing":
				e.h.Billing = billing.GateFunc(func(context.Context, billing.Request) error { n.Add(1); <-stuck; return nil })
			case "pool":
				e.sched.Pool = hangingPool{release: stuck, entered: n, next: e.pool}
			case "credentials":
				e.h.Credentials = credsFunc(func(context.Context, *scheduler.Account) (string, error) { n.Add(1); <-stuck; return "", nil })
			}
			cancel, done := e.abandonable(streamReq)
			waitUntil(t, "the hook call", func() bool { return n.Load() == 1 })
			cancel()
			<-done
			waitUntil(t, "the turn to end", func() bool { return e.h.Active() == 0 })
			if n := e.lim.InFlight("user:" + "u1"); n != 0 {
				t.Fatalf("user slots %d", n)
			}
			if len(e.up.Requests()) != 0 || len(e.sink.all()) != 0 {
				t.Fatalf("upstream %d, records %d", len(e.up.Requests()), len(e.sink.all()))
			}
		})
	}
}

// TestFaultLateSelection: a Select abandoned past its bound that later
// gets an account slot gives it back.
func TestFaultLateSelection(t *testing.T) {
	e := newEnv(t, "a")
	release := make(chan struct{})
	n := new(atomic.Int64)
	e.h.HookTimeout = 20 * time.Millisecond
	e.sched.AccountWait.Timeout = 20 * time.Millisecond
	e.sched.Pool = hangingPool{release: release, entered: n, next: e.pool}
	if r := e.do(textReq); r.status != 503 {
		t.Fatalf("status %d", r.status)
	}
	// The abandoned Select now goes on and takes a slot of a; it must be
	// given back. A later turn then finds the account free.
	close(release)
	waitUntil(t, "the late slot to be released", func() bool { return schedInFlight(e.sched, "a") == 0 })
	if r := e.do(textReq); r.status != 200 || n.Load() != 2 {
		t.Fatalf("next turn: %d (%d pool calls)", r.status, n.Load())
	}
}

// TestFaultHookPanics: a panic in any hook is contained; the answer is the
// one for a failing hook.
func TestFaultHookPanics(t *testing.T) {
	t.Run("pool", func(t *testing.T) {
		e := newEnv(t, "a")
		e.sched.Pool = panickingPool{}
		if r := e.do(streamReq); r.status != 503 {
			t.Fatalf("status %d", r.status)
		}
		if !strings.Contains(e.logs.String(), "pool bug") {
			t.Fatalf("panic not logged:\n%s", e.logs.String())
		}
	})
	t.Run("credentials", func(t *testing.T) {
		e := newPriorityEnv(t)
		keys := e.keys
		e.h.Credentials = credsFunc(func(ctx context.Context, a *scheduler.Account) (string, error) {
			if a.ID == "bad" {
				panic("credentials bug")
			}
			return keys.Token(ctx, a)
		})
		if r := e.do(textReq); r.status != 200 {
			t.Fatalf("status %d", r.status)
		}
		if recs := e.sink.all(); len(recs) != 1 || recs[0].AccountID != "good" {
			t.Fatalf("records %+v", recs)
		}
	})
	t.Run("on account event", func(t *testing.T) {
		e := newPriorityEnv(t)
		e.sched.Logger = e.h.Logger
		e.sched.OnAccountEvent = func(context.Context, scheduler.AccountEvent) { panic("event bug") }
		e.up.Script("bad", relaytest.Step{Status: 401})
		if r := e.do(textReq); r.status != 200 {
			t.Fatalf("status %d", r.status)
		}
		if !strings.Contains(e.logs.String(), "event bug") {
			t.Fatalf("panic not logged:\n%s", e.logs.String())
		}
	})
	t.Run("user limiter", func(t *testing.T) {
		e := newEnv(t, "a")
		e.subj.Concurrency = 1
		e.h.Limiter = panickingLimiter{}
		if r := e.do(textReq); r.status != 503 {
			t.Fatalf("status %d", r.status)
		}
	})
}

type panickingLimiter struct{ noCount }

func (panickingLimiter) TryAcquire(context.Context, string, int) (func(), bool, error) {
	panic("limiter bug")
}

// noCount lets the env's slot check read a limiter that never holds any.
type noCount struct{}

func (noCount) InFlight(string) int { return 0 }

var _ concurrency.SlotLimiter = panickingLimiter{}

// TestFaultHookErrors: hooks that return errors get the documented answer.
func TestFaultHookErrors(t *testing.T) {
	t.Run("authenticate", func(t *testing.T) {
		e := newEnv(t, "a")
		e.h.Authenticate = func(*http.Request) (*relay.Subject, error) { return nil, errors.New("key store down") }
		if r := e.do(textReq); r.status != 401 {
			t.Fatalf("status %d", r.status)
		}
	})
	t.Run("authenticate answers", func(t *testing.T) {
		// An error holding an *APIError is the answer: a key store outage
		// is 503, a revoked key 403, and the upstream is never asked.
		e := newEnv(t, "a")
		for _, ae := range []*relay.APIError{
			{Status: 503, Type: "server_error", Message: "Key store unavailable", RetryAfter: 2 * time.Second},
			{Status: 403, Type: "permission_error", Message: "This key was revoked", Code: "key_revoked"},
		} {
			e.h.Authenticate = func(*http.Request) (*relay.Subject, error) { return nil, fmt.Errorf("lookup: %w", ae) }
			r := e.do(textReq)
			if r.status != ae.Status {
				t.Fatalf("status %d, want %d", r.status, ae.Status)
			}
			if typ, msg, _, code := apiErr(t, r.body); typ != ae.Type || msg != ae.Message || code != ae.Code {
				t.Fatalf("answer %s %q %s, want %+v", typ, msg, code, ae)
			}
		}
		if n := len(e.up.Requests()); n != 0 {
			t.Fatalf("%d upstream requests for unauthenticated clients", n)
		}
	})
	t.Run("user limiter", func(t *testing.T) {
		e := newEnv(t, "a")
		e.subj.Concurrency = 1
		e.h.Limiter = failingLimiter{}
		r := e.do(textReq)
		if r.status != 503 {
			t.Fatalf("status %d", r.status)
		}
		if _, msg, _, _ := apiErr(t, r.body); !strings.Contains(msg, "Concurrency backend unavailable") {
			t.Fatalf("message %q", msg)
		}
	})
	t.Run("credentials everywhere", func(t *testing.T) {
		e := newEnv(t, "a", "b")
		e.h.Credentials = credsFunc(func(context.Context, *scheduler.Account) (string, error) { return "", errors.New("vault sealed") })
		if r := e.do(textReq); r.status != 502 {
			t.Fatalf("status %d", r.status)
		}
		if len(e.up.Requests()) != 0 || len(e.sink.all()) != 0 {
			t.Fatalf("upstream %d, records %d", len(e.up.Requests()), len(e.sink.all()))
		}
	})
}

type failingLimiter struct{ noCount }

func (failingLimiter) TryAcquire(context.Context, string, int) (func(), bool, error) {
	return nil, false, errors.New("redis down")
}

// TestFaultAccountLimiter: an account limiter whose backend fails is a
// 503 the client may retry, not "no accounts".
func TestFaultAccountLimiter(t *testing.T) {
	e := newEnv(t, "a")
	e.sched.Limiter = failingLimiter{}
	r := e.do(textReq)
	if r.status != 503 || r.header.Get("Retry-After") == "" {
		t.Fatalf("status %d", r.status)
	}
	if _, msg, _, _ := apiErr(t, r.body); !strings.Contains(msg, "Concurrency backend unavailable") {
		t.Fatalf("message %q", msg)
	}
	if !strings.Contains(e.logs.String(), "redis down") || len(e.up.Requests()) != 0 {
		t.Fatalf("upstream %d; logs:\n%s", len(e.up.Requests()), e.logs.String())
	}
}
