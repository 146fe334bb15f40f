package relay_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/concurrency"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/relaykit/responsesrelay/scheduler"
)

// TestUserConcurrencyOne: four streaming requests at once from a user with
// one slot all get answers, and the upstream never has two at a time.
func TestUserConcurrencyOne(t *testing.T) {
	e := newEnv(t, "a")
	e.subj.Concurrency = 1
	var wg sync.WaitGroup
	results := make([]result, 4)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp := e.post(streamReq)
			defer resp.Body.Close()
			evs, _ := relaytest.ReadSSE(resp.Body)
			results[i] = result{status: resp.StatusCode, events: evs}
		}()
	}
	wg.Wait()
	for i, r := range results {
		if r.status != 200 || r.lastType() != "response.completed" {
			t.Fatalf("request %d: status %d, last event %q", i, r.status, r.lastType())
		}
	}
	if m := e.up.MaxInFlight("a"); m != 1 {
		t.Fatalf("upstream saw %d concurrent requests of a concurrency-1 user", m)
	}
	if n := len(e.sink.all()); n != 4 {
		t.Fatalf("%d usage records", n)
	}
}

func TestUserQueueFull(t *testing.T) {
	e := newEnv(t, "a")
	e.subj.Concurrency = 1
	e.h.UserWait = concurrency.WaitOptions{MaxWaiters: 1, Timeout: 10 * time.Second}
	release, first := e.holdOne()
	defer release()
	second := make(chan result, 1)
	go func() { second <- e.do(textReq) }() // waits in the queue
	waitUntil(t, "a waiter", func() bool { return e.lim.Waiting("user:"+e.subj.UserID) == 1 })
	r := e.do(textReq) // queue full
	if r.status != 429 || r.header.Get("Retry-After") == "" {
		t.Fatalf("status %d, Retry-After %q", r.status, r.header.Get("Retry-After"))
	}
	typ, msg, _, _ := apiErr(t, r.body)
	if typ != "rate_limit_error" || msg != "Too many pending requests, please retry later" {
		t.Fatalf("got %q %q", typ, msg)
	}
	release()
	if r := <-first; r.status != 200 {
		t.Fatalf("first: %d", r.status)
	}
	if r := <-second; r.status != 200 {
		t.Fatalf("queued: %d", r.status)
	}
}

func TestUserWaitTimeout(t *testing.T) {
	e := newEnv(t, "a")
	e.subj.Concurrency = 1
	e.h.UserWait = concurrency.WaitOptions{Timeout: 50 * time.Millisecond}
	release, first := e.holdOne()
	r := e.do(textReq)
	release()
	if r.status != 429 || r.header.Get("Retry-After") == "" {
		t.Fatalf("status %d", r.status)
	}
	if typ, _, _, _ := apiErr(t, r.body); typ != "rate_limit_error" {
		t.Fatalf("type %q", typ)
	}
	<-first
}

// TestWaitingStreamGetsPings: a streaming request that waits for a user
// slot is committed as a 200 event stream by ": ping" comments, and then
// served normally.
func TestWaitingStreamGetsPings(t *testing.T) {
	e := newEnv(t, "a")
	e.subj.Concurrency = 1
	e.h.KeepAlive = 5 * time.Millisecond
	release, first := e.holdOne()
	resp := e.post(streamReq)
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	buf := make([]byte, len(": ping\n\n"))
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != ": ping\n\n" {
		t.Fatalf("first bytes %q (%v)", buf, err)
	}
	release()
	evs, err := relaytest.ReadSSE(resp.Body)
	if err != nil || len(evs) == 0 || evs[len(evs)-1].Type != "response.completed" {
		t.Fatalf("after pings: %d events, err %v", len(evs), err)
	}
	<-first
}

func TestBillingGate(t *testing.T) {
	e := newEnv(t, "a")
	var seen billing.Request
	e.h.Billing = billing.GateFunc(func(_ context.Context, q billing.Request) error {
		seen = q
		return &billing.Denial{Status: 402, Type: "insufficient_quota", Message: "Balance exhausted", RetryAfter: 90 * time.Second}
	})
	r := e.do(textReq)
	if r.status != 402 || r.header.Get("Retry-After") != "90" {
		t.Fatalf("status %d, Retry-After %q", r.status, r.header.Get("Retry-After"))
	}
	if typ, msg, _, _ := apiErr(t, r.body); typ != "insufficient_quota" || msg != "Balance exhausted" {
		t.Fatalf("got %q %q", typ, msg)
	}
	if seen.UserID != "u1" || seen.Model != "gpt-test" || seen.Transport != "http" {
		t.Fatalf("gate saw %+v", seen)
	}

	e.h.Billing = billing.GateFunc(func(context.Context, billing.Request) error { return errors.New("db down") })
	if r := e.do(textReq); r.status != 503 {
		t.Fatalf("gate error: status %d", r.status)
	}
	e.h.Billing = billing.GateFunc(func(context.Context, billing.Request) error { panic("bug in gate") })
	if r := e.do(textReq); r.status != 503 {
		t.Fatalf("gate panic: status %d", r.status)
	}
	if n := len(e.up.Requests()); n != 0 {
		t.Fatalf("denied turns reached the upstream %d times", n)
	}
	if n := len(e.sink.all()); n != 0 {
		t.Fatalf("denied turns made %d usage records", n)
	}
	if !strings.Contains(e.logs.String(), "db down") {
		t.Fatalf("gate failure not logged")
	}
}

// TestWaitingForAccountGetsPings: a streaming turn waiting for a full
// account's slot in an in-memory Scheduler (Select runs on the turn's own
// goroutine) is pinged meanwhile, and served once the slot frees.
func TestWaitingForAccountGetsPings(t *testing.T) {
	e := newEnv(t)
	lim := concurrency.NewMemory()
	e.sched.Limiter = lim
	e.addAccount(&scheduler.Account{ID: "a", Concurrency: 1})
	e.h.KeepAlive = 5 * time.Millisecond
	release, first := e.holdOne()
	resp := e.post(streamReq)
	defer resp.Body.Close()
	buf := make([]byte, 2*len(": ping\n\n"))
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != ": ping\n\n: ping\n\n" {
		t.Fatalf("first bytes %q (%v)", buf, err)
	}
	waitUntil(t, "the pinged turn to wait for the account", func() bool { return lim.Waiting("account:a") == 1 })
	release()
	evs, err := relaytest.ReadSSE(resp.Body)
	if err != nil || len(evs) == 0 || evs[len(evs)-1].Type != "response.completed" {
		t.Fatalf("after pings: %d events, err %v", len(evs), err)
	}
	<-first
}
