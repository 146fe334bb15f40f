package relay_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/relay"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/relaykit/responsesrelay/scheduler"
)

// recorder is an Observer that keeps every call in order.
type recorder struct {
	mu     sync.Mutex
	calls  []string
	starts []relay.TurnStart
	waits  []relay.SlotWait
	tries  []relay.Attempt
	ends   []relay.TurnEnd
}

type ctxKey struct{}

func (r *recorder) observer() *relay.Observer {
	return &relay.Observer{
		TurnStart: func(ctx context.Context, e relay.TurnStart) context.Context {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.calls = append(r.calls, "start")
			r.starts = append(r.starts, e)
			return context.WithValue(ctx, ctxKey{}, e.RequestID)
		},
		SlotWait: func(ctx context.Context, e relay.SlotWait) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.calls = append(r.calls, "wait:"+string(e.Kind)+":"+string(e.Outcome))
			r.waits = append(r.waits, e)
		},
		Attempt: func(ctx context.Context, e relay.Attempt) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.calls = append(r.calls, "attempt:"+string(e.Outcome))
			r.tries = append(r.tries, e)
		},
		TurnEnd: func(ctx context.Context, e relay.TurnEnd) {
			r.mu.Lock()
			defer r.mu.Unlock()
			if ctx.Value(ctxKey{}) != e.Usage.RequestID {
				r.calls = append(r.calls, "end-without-start-context")
			}
			r.calls = append(r.calls, "end:"+e.Usage.Status)
			r.ends = append(r.ends, e)
		},
	}
}

func (r *recorder) sequence() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.calls, " ")
}

func (r *recorder) end(t *testing.T) relay.TurnEnd {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.ends) != 1 {
		t.Fatalf("%d TurnEnd calls: %s", len(r.ends), strings.Join(r.calls, " "))
	}
	return r.ends[0]
}

// observed sets a recorder on the env's handler.
func observed(e *env) *recorder {
	r := &recorder{}
	e.h.Observer = r.observer()
	return r
}

// settle waits until the handler has returned for every turn, which is
// after TurnEnd.
func (e *env) settle() {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.h.Shutdown(ctx); err != nil {
		e.t.Fatalf("turns still active: %d", e.h.Active())
	}
}

func TestObserverStreamServed(t *testing.T) {
	e := newEnv(t, "a")
	e.subj.Concurrency = 2
	rec := observed(e)
	r := e.do(streamReq)
	e.settle()
	if r.lastType() != "response.completed" {
		t.Fatalf("events %v", r.types())
	}
	want := "start wait:user:acquired wait:account:acquired attempt:served end:completed"
	if got := rec.sequence(); got != want {
		t.Fatalf("calls\n got %s\nwant %s", got, want)
	}
	end, u := rec.end(t), e.sink.all()[0]
	if end.Code != 200 || !end.Recorded || end.Usage.Attempts != 1 || end.Usage.AccountID != "a" || end.Usage.Model != "gpt-test" ||
		!end.Usage.Stream || end.Usage.Transport != "http" || end.Subject == nil || end.Subject.UserID != "u1" {
		t.Fatalf("end %+v", end)
	}
	// The usage is the record the sink got, whole.
	if end.Usage != u || end.Usage.OutputTokens == 0 {
		t.Fatalf("end usage %+v, record %+v", end.Usage, u)
	}
	// The time to first token, formerly its own call, is on the usage.
	if f := end.Usage.FirstTokenMS; f < 0 || f > end.Usage.DurationMS {
		t.Fatalf("first token after %d ms (turn %d ms)", f, end.Usage.DurationMS)
	}
	if end.Usage.RequestID != r.header.Get("X-Relay-Request-Id") {
		t.Fatalf("request ids %s %s", end.Usage.RequestID, r.header.Get("X-Relay-Request-Id"))
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if s := rec.starts[0]; s.Transport != "http" || s.Number != 1 || s.RequestID != end.Usage.RequestID {
		t.Fatalf("start %+v", s)
	}
	if w := rec.waits[1]; w.Kind != relay.SlotAccount || w.Outcome != relay.WaitAcquired || w.Wait < 0 {
		t.Fatalf("account wait %+v", w)
	}
	// The attempt names the account the selection took, and fits in the turn.
	if a := rec.tries[0]; a.N != 1 || a.AccountID != "a" || a.Layer != scheduler.LayerBalanced || a.Status != 200 || a.Reason != "" ||
		a.Duration <= 0 || a.Duration.Milliseconds() > end.Usage.DurationMS {
		t.Fatalf("attempt %+v (turn %d ms)", a, end.Usage.DurationMS)
	}
}

func TestObserverJSONServed(t *testing.T) {
	e := newEnv(t, "a")
	rec := observed(e)
	if r := e.do(textReq); r.status != 200 {
		t.Fatalf("status %d", r.status)
	}
	e.settle()
	// No user limit: no user slot wait.
	if got, want := rec.sequence(), "start wait:account:acquired attempt:served end:completed"; got != want {
		t.Fatalf("calls\n got %s\nwant %s", got, want)
	}
	if end := rec.end(t); end.Usage.Stream || end.Code != 200 || !end.Recorded || end.Usage.InputTokens == 0 || end.Usage.FirstTokenMS < 0 {
		t.Fatalf("end %+v", end)
	}
}

func TestObserverFailover(t *testing.T) {
	e := newPriorityEnv(t)
	rec := observed(e)
	e.up.Script("bad", relaytest.Step{Status: 429})
	if r := e.do(streamReq); r.lastType() != "response.completed" {
		t.Fatalf("events %v", r.types())
	}
	e.settle()
	want := "start wait:account:acquired attempt:failover wait:account:acquired attempt:served end:completed"
	if got := rec.sequence(); got != want {
		t.Fatalf("calls\n got %s\nwant %s", got, want)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	a, b := rec.tries[0], rec.tries[1]
	if a.AccountID != "bad" || a.Status != 429 || a.Reason != relay.ReasonStatus || a.N != 1 {
		t.Fatalf("first attempt %+v", a)
	}
	if b.AccountID != "good" || b.N != 2 || b.Outcome != relay.AttemptServed {
		t.Fatalf("second attempt %+v", b)
	}
	if end := rec.ends[0]; end.Usage.Attempts != 2 || end.Usage.AccountID != "good" || end.Code != 200 || end.Usage.FirstTokenMS < 0 {
		t.Fatalf("end %+v", end)
	}
}

func TestObserverFailoverReasons(t *testing.T) {
	cases := []struct {
		step   relaytest.Step
		reason relay.AttemptReason
	}{
		{relaytest.Step{Cut: true}, relay.ReasonConnection},
		{relaytest.Step{End: "refused server_is_overloaded"}, relay.ReasonRefused},
		{relaytest.Step{Status: 503}, relay.ReasonStatus},
	}
	for _, c := range cases {
		t.Run(string(c.reason), func(t *testing.T) {
			e := newPriorityEnv(t)
			rec := observed(e)
			e.up.Script("bad", c.step)
			if r := e.do(streamReq); r.lastType() != "response.completed" {
				t.Fatalf("events %v", r.types())
			}
			e.settle()
			rec.mu.Lock()
			defer rec.mu.Unlock()
			if a := rec.tries[0]; a.Outcome != relay.AttemptFailover || a.Reason != c.reason {
				t.Fatalf("attempt %+v", a)
			}
		})
	}
}

// TestObserverAccountsExhausted: both accounts fail over; the second
// attempt is "failed", not "failover": its error goes to the client.
func TestObserverAccountsExhausted(t *testing.T) {
	e := newPriorityEnv(t)
	rec := observed(e)
	e.up.Script("bad", relaytest.Step{Status: 500})
	e.up.Script("good", relaytest.Step{Status: 500})
	if r := e.do(textReq); r.status < 500 {
		t.Fatalf("status %d", r.status)
	}
	e.settle()
	want := "start wait:account:acquired attempt:failover wait:account:acquired attempt:failed wait:account:no_account end:upstream_error"
	if got := rec.sequence(); got != want {
		t.Fatalf("calls\n got %s\nwant %s", got, want)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if a := rec.tries[1]; a.AccountID != "good" || a.Status != 500 || a.Reason != relay.ReasonStatus || a.N != 2 {
		t.Fatalf("second attempt %+v", a)
	}
	// The record names no account (none served); the end names the last tried.
	if end := rec.ends[0]; !end.Recorded || end.Usage.AccountID != "good" || end.Usage.Attempts != 2 || end.Usage.FirstTokenMS != -1 {
		t.Fatalf("end %+v", end)
	}
}

// TestObserverAllFailed: every account refuses; the last attempt is
// "failed" and the turn ends with the mapped error.
func TestObserverAllFailed(t *testing.T) {
	e := newEnv(t, "a")
	rec := observed(e)
	e.up.Script("a", relaytest.Step{Status: 400, Body: `{"error":{"message":"bad input","type":"invalid_request_error","param":null,"code":null}}`})
	if r := e.do(textReq); r.status != 400 {
		t.Fatalf("status %d", r.status)
	}
	e.settle()
	if got, want := rec.sequence(), "start wait:account:acquired attempt:failed end:upstream_error"; got != want {
		t.Fatalf("calls\n got %s\nwant %s", got, want)
	}
	if end := rec.end(t); end.Code != 400 || end.ErrorType != "invalid_request_error" || !end.Recorded || end.Usage.FirstTokenMS != -1 {
		t.Fatalf("end %+v", end)
	}
}

func TestObserverClientGoneMidStream(t *testing.T) {
	e := newEnv(t, "a")
	rec := observed(e)
	e.leaveMidStream("a", streamReq)
	e.settle()
	want := "start wait:account:acquired attempt:client_gone end:client_gone"
	if got := rec.sequence(); got != want {
		t.Fatalf("calls\n got %s\nwant %s", got, want)
	}
	if end := rec.end(t); !end.Recorded || end.Usage.OutputTokens == 0 || end.Usage.AccountID != "a" || end.Usage.FirstTokenMS < 0 {
		t.Fatalf("end %+v", end)
	}
}

// TestObserverClientGoneWaiting: a client that leaves while waiting for
// its user slot ends as client_gone with no attempt.
func TestObserverClientGoneWaiting(t *testing.T) {
	e := newEnv(t, "a")
	e.subj.Concurrency = 1
	release, first := e.holdOne()
	rec := observed(e)
	cancel, done := e.abandonable(streamReq)
	waitUntil(t, "the waiter", func() bool { return e.lim.Waiting("user:"+e.subj.UserID) == 1 })
	cancel()
	<-done
	waitUntil(t, "the turn to end", func() bool { return e.h.Active() == 1 })
	release()
	<-first
	e.settle()
	if got, want := rec.sequence(), "start wait:user:client_gone end:client_gone"; got != want {
		t.Fatalf("calls\n got %s\nwant %s", got, want)
	}
	// No record, but what is known: the request, and no first token.
	if end := rec.end(t); end.Code != 499 || end.Recorded || end.Usage.Attempts != 0 || end.Usage.RequestID == "" ||
		end.Usage.Model != "gpt-test" || end.Usage.UserID != "u1" || end.Usage.AccountID != "" || end.Usage.FirstTokenMS != -1 {
		t.Fatalf("end %+v", end)
	}
}

func TestObserverRejected(t *testing.T) {
	e := newEnv(t)
	e.addAccount(&scheduler.Account{ID: "a", Models: []string{"gpt-test"}})
	rec := observed(e)
	e.subj.Concurrency = 1
	// 401: no subject.
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/responses", strings.NewReader(textReq))
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// 400: invalid body.
	if r := e.do(`{"input":"no model"}`); r.status != 400 {
		t.Fatalf("status %d", r.status)
	}
	// 503: no account serves the model.
	if r := e.do(`{"model":"gpt-other","input":"x"}`); r.status != 503 {
		t.Fatalf("status %d", r.status)
	}
	e.settle()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.ends) != 3 {
		t.Fatalf("calls %s", strings.Join(rec.calls, " "))
	}
	got := []string{}
	for _, end := range rec.ends {
		got = append(got, fmt.Sprintf("%s/%d/%s/%v/%s/%v", end.Usage.Status, end.Code, end.ErrorType, end.Subject != nil,
			end.Usage.Model, end.Recorded || end.Usage.RequestID == "" || end.Usage.Attempts != 0))
	}
	want := "error/401/authentication_error/false//false error/400/invalid_request_error/true//false error/503/server_error/true/gpt-other/false"
	if strings.Join(got, " ") != want {
		t.Fatalf("ends\n got %s\nwant %s", strings.Join(got, " "), want)
	}
	if w := rec.waits[len(rec.waits)-1]; w.Kind != relay.SlotAccount || w.Outcome != relay.WaitNoAccount {
		t.Fatalf("last wait %+v", w)
	}
}

func TestObserverUserQueueFull(t *testing.T) {
	e := newEnv(t, "a")
	e.subj.Concurrency = 1
	e.h.UserWait.MaxWaiters = -1 // no waiting
	release, first := e.holdOne()
	rec := observed(e)
	if r := e.do(textReq); r.status != 429 {
		t.Fatalf("status %d", r.status)
	}
	release()
	<-first
	e.settle()
	if got, want := rec.sequence(), "start wait:user:queue_full end:error"; got != want {
		t.Fatalf("calls\n got %s\nwant %s", got, want)
	}
	if end := rec.end(t); end.Code != 429 || end.ErrorType != "rate_limit_error" || end.Recorded {
		t.Fatalf("end %+v", end)
	}
}

// TestObserverContext: the context TurnStart returns reaches the host
// hooks (so a span is the parent of their work).
func TestObserverContext(t *testing.T) {
	e := newEnv(t, "a")
	rec := observed(e)
	keys := e.keys
	var seen []any
	var mu sync.Mutex
	e.h.Credentials = credsFunc(func(ctx context.Context, a *scheduler.Account) (string, error) {
		mu.Lock()
		seen = append(seen, ctx.Value(ctxKey{}))
		mu.Unlock()
		return keys.Token(ctx, a)
	})
	e.h.Billing = billing.GateFunc(func(ctx context.Context, q billing.Request) error {
		mu.Lock()
		seen = append(seen, ctx.Value(ctxKey{}))
		mu.Unlock()
		return nil
	})
	if r := e.do(textReq); r.status != 200 {
		t.Fatalf("status %d", r.status)
	}
	e.settle()
	id := rec.end(t).Usage.RequestID
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 || seen[0] != id || seen[1] != id {
		t.Fatalf("hooks saw %v, want the request id %s twice", seen, id)
	}
}

// TestObserverPanics: a panicking observer is logged; the turn is served.
func TestObserverPanics(t *testing.T) {
	e := newEnv(t, "a")
	e.h.Observer = &relay.Observer{
		TurnStart: func(context.Context, relay.TurnStart) context.Context { panic("start bug") },
		SlotWait:  func(context.Context, relay.SlotWait) { panic("wait bug") },
		Attempt:   func(context.Context, relay.Attempt) { panic("attempt bug") },
		TurnEnd:   func(context.Context, relay.TurnEnd) { panic("end bug") },
	}
	if r := e.do(streamReq); r.lastType() != "response.completed" {
		t.Fatalf("events %v", r.types())
	}
	e.settle()
	logs := e.logs.String()
	for _, s := range []string{"start bug", "wait bug", "attempt bug", "end bug"} {
		if !strings.Contains(logs, s) {
			t.Fatalf("%q not logged:\n%s", s, logs)
		}
	}
	if len(e.sink.all()) != 1 {
		t.Fatalf("records %d", len(e.sink.all()))
	}
}
