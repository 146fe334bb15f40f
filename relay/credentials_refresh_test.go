package relay_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/internal/relaytestenv"
	"github.com/relaykit/responsesrelay/relay"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/relaykit/responsesrelay/scheduler"
	"github.com/tidwall/gjson"
)

// Tokens of renewing credentials: without the sk- shape, so only their
// exact value can be masked, and distinctive for the canary scans.
func oldToken(id string) string { return "oat-" + id + "-OLDCANARY-Q7w9E2r4T6y8" }
func newToken(id string) string { return "oat-" + id + "-NEWCANARY-P1o3I5u7Y9t2" }

// renewingKeys is a scheduler.Refresher: Token gives an account's current
// token; Refresh replaces it with the next of its list, or answers what
// fail says. gate, when set, runs first (the shared-call test holds the
// call there). It counts the calls.
type renewingKeys struct {
	mu      sync.Mutex
	current map[string]string
	next    map[string][]string
	fail    func(ctx context.Context, rejected string) (string, error)
	gate    func(ctx context.Context)
	calls   atomic.Int64
}

// newRenewing gives each account oldToken, renewed to newToken.
func newRenewing(ids ...string) *renewingKeys {
	k := &renewingKeys{current: map[string]string{}, next: map[string][]string{}}
	for _, id := range ids {
		k.current[id], k.next[id] = oldToken(id), []string{newToken(id)}
	}
	return k
}

func (k *renewingKeys) Token(_ context.Context, a *scheduler.Account) (string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if t := k.current[a.ID]; t != "" {
		return t, nil
	}
	return "", errors.New("no token")
}

func (k *renewingKeys) Refresh(ctx context.Context, a *scheduler.Account, rejected string) (string, error) {
	k.calls.Add(1)
	if k.gate != nil {
		k.gate(ctx)
	}
	if k.fail != nil {
		return k.fail(ctx, rejected)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	n := k.next[a.ID]
	if len(n) == 0 {
		return "", errors.New("nothing to renew to")
	}
	k.current[a.ID], k.next[a.ID] = n[0], n[1:]
	return n[0], nil
}

// newRenewEnv is a relay over accounts whose credentials renew: each
// starts with oldToken while the fake accepts only newToken.
func newRenewEnv(t *testing.T, ids ...string) (*env, *renewingKeys) {
	e := newEnv(t, ids...)
	e.sched.Logger = e.h.Logger
	k := newRenewing(ids...)
	e.h.Credentials = k
	for _, id := range ids {
		e.up.SetKey(id, newToken(id))
	}
	return e, k
}

// bearers lists the tokens account's requests carried, in order.
func bearers(up *relaytest.Server, account string) []string {
	var out []string
	for _, q := range up.Requests() {
		if q.Account == account && q.Method != "WS" {
			out = append(out, strings.TrimPrefix(q.Header.Get("Authorization"), "Bearer "))
		}
	}
	return out
}

func stateOf(t *testing.T, s *scheduler.Scheduler, id string) scheduler.AccountState {
	t.Helper()
	for _, st := range s.Snapshot() {
		if st.ID == id {
			return st
		}
	}
	t.Fatalf("account %s not in the snapshot", id)
	return scheduler.AccountState{}
}

// A 401 is answered by one renewal and one retry on the same account,
// which costs the account nothing: both transports of a POST.
func TestRenewOn401(t *testing.T) {
	t.Run("json", func(t *testing.T) { renewOn401(t, textReq) })
	t.Run("stream", func(t *testing.T) { renewOn401(t, streamReq) })
}

func renewOn401(t *testing.T, body string) {
	{
		e, k := newRenewEnv(t, "a")
		rec := &recorder{}
		e.h.Observer = rec.observer()
		r := e.do(body)
		if r.status != 200 || (r.events != nil && r.lastType() != "response.completed") {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		if got := bearers(e.up, "a"); k.calls.Load() != 1 || len(got) != 2 || got[0] != oldToken("a") || got[1] != newToken("a") {
			t.Fatalf("refreshes %d, tokens sent %q", k.calls.Load(), got)
		}
		st := stateOf(t, e.sched, "a")
		if !st.CoolingUntil.IsZero() || st.LastStatus != 200 || st.ErrorRate != 0 {
			t.Fatalf("the renewed 401 cost the account: %+v", st)
		}
		recs := e.sink.all()
		if len(recs) != 1 || recs[0].Attempts != 2 || recs[0].AccountID != "a" || recs[0].Status != "completed" {
			t.Fatalf("records %+v", recs)
		}
		rec.mu.Lock()
		tries := rec.tries
		rec.mu.Unlock()
		if len(tries) != 2 || tries[0].N != 1 || tries[0].Status != 401 || tries[0].Outcome != relay.AttemptFailover ||
			tries[0].AccountID != "a" || tries[1].N != 2 || tries[1].Outcome != relay.AttemptServed {
			t.Fatalf("attempts %+v", tries)
		}
		// The next turn gets the renewed token from Token: no 401.
		if r := e.do(body); r.status != 200 || len(bearers(e.up, "a")) != 3 || k.calls.Load() != 1 {
			t.Fatalf("next turn: %d, %d requests, %d refreshes", r.status, len(bearers(e.up, "a")), k.calls.Load())
		}
	}
}

// 32 turns that all get a 401 for the same token share one Refresh.
func TestRenewSharedByConcurrentTurns(t *testing.T) {
	const n = 32
	e, k := newRenewEnv(t)
	e.addAccount(&scheduler.Account{ID: "a", Concurrency: 2 * n})
	k.current["a"], k.next["a"] = oldToken("a"), []string{newToken("a")}
	e.up.SetKey("a", newToken("a"))
	release := make(chan struct{})
	k.gate = func(ctx context.Context) {
		select {
		case <-release:
		case <-ctx.Done():
		}
	}
	var wg sync.WaitGroup
	statuses := make([]int, n)
	for i := range n {
		wg.Go(func() { statuses[i] = e.do(streamReq).status })
	}
	// Every turn has had its 401 and waits for the one call in flight.
	waitUntil(t, "every turn to wait for the renewal", func() bool { return relay.RenewWaiting(e.h) == n })
	close(release)
	wg.Wait()
	for i, s := range statuses {
		if s != 200 {
			t.Fatalf("turn %d: status %d", i, s)
		}
	}
	old, renewed := 0, 0
	for _, b := range bearers(e.up, "a") {
		switch b {
		case oldToken("a"):
			old++
		case newToken("a"):
			renewed++
		}
	}
	if k.calls.Load() != 1 || old != n || renewed != n {
		t.Fatalf("refreshes %d, requests with the old token %d, with the new %d", k.calls.Load(), old, renewed)
	}
	if relay.RenewWaiting(e.h) != 0 {
		t.Fatalf("%d still waiting", relay.RenewWaiting(e.h))
	}
}

// A renewal that fails, hangs, renews nothing or whose token is refused
// too cools the account as a 401 does, with the cause in the snapshot's
// detail; the turn moves to the next account.
func TestRenewFailureCools(t *testing.T) {
	cases := []struct {
		name     string
		set      func(e *env, k *renewingKeys, stuck <-chan struct{})
		detail   string
		requests int // to account a
	}{
		{"refresh error", func(e *env, k *renewingKeys, _ <-chan struct{}) {
			k.fail = func(_ context.Context, rejected string) (string, error) {
				return "", fmt.Errorf("token endpoint refused %s: invalid_grant", rejected)
			}
		}, "credential refresh failed: token endpoint refused [redacted]: invalid_grant", 1},
		{"refresh hangs", func(e *env, k *renewingKeys, stuck <-chan struct{}) {
			e.h.HookTimeout = 50 * time.Millisecond
			k.gate = func(context.Context) { <-stuck }
		}, "credential refresh failed: " + relay.ErrHookTimeout.Error(), 1},
		{"same token", func(e *env, k *renewingKeys, _ <-chan struct{}) {
			k.fail = func(_ context.Context, rejected string) (string, error) { return rejected, nil }
		}, "credential refresh failed: Refresh returned no new token", 1},
		{"renewed token refused", func(e *env, k *renewingKeys, _ <-chan struct{}) {
			k.next["a"] = []string{"oat-a-THIRDCANARY-m4n5b6v7c8x9"}
		}, "the renewed token was rejected too", 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e, k := newRenewEnv(t, "a")
			e.addAccount(&scheduler.Account{ID: "b", Priority: 1})
			k.current["b"] = e.keys["b"]
			stuck, _ := stuckHook(t)
			c.set(e, k, stuck)
			var events []scheduler.AccountEvent
			var mu sync.Mutex
			e.sched.OnAccountEvent = func(_ context.Context, ev scheduler.AccountEvent) {
				mu.Lock()
				defer mu.Unlock()
				events = append(events, ev)
			}
			r := e.do(textReq)
			if r.status != 200 {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			if recs := e.sink.all(); len(recs) != 1 || recs[0].AccountID != "b" || recs[0].Attempts != 1+c.requests {
				t.Fatalf("records %+v", recs)
			}
			st := stateOf(t, e.sched, "a")
			want := "401: the upstream rejected the credentials; " + c.detail
			if st.CoolingReason != scheduler.EventUnauthorized || st.CoolingDetail != want || st.CoolingUntil.IsZero() {
				t.Fatalf("a: %q %q until %v; want detail %q", st.CoolingReason, st.CoolingDetail, st.CoolingUntil, want)
			}
			if k.calls.Load() != 1 || len(bearers(e.up, "a")) != c.requests {
				t.Fatalf("refreshes %d, requests to a %d", k.calls.Load(), len(bearers(e.up, "a")))
			}
			mu.Lock()
			defer mu.Unlock()
			if len(events) != 1 || events[0].AccountID != "a" || events[0].Reason != want {
				t.Fatalf("events %+v", events)
			}
		})
	}
}

// The calls outside turns (a stored response's retrieve) renew a rejected
// token as turns do; a renewal that fails cools the account and the
// client gets the upstream's 401, masked.
func TestRenewStoredCall(t *testing.T) {
	e, k := newRenewEnv(t, "a")
	e.up.SetKey("a", oldToken("a"))
	r := e.do(textReq)
	id := gjson.GetBytes(r.body, "id").String()
	if r.status != 200 || id == "" {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	// The upstream now wants a new token: it was rotated elsewhere.
	e.up.SetKey("a", newToken("a"))
	got := e.call(http.MethodGet, "/v1/responses/"+id, relaytestenv.ClientKey)
	if got.status != 200 || gjson.GetBytes(got.body, "id").String() != id || k.calls.Load() != 1 {
		t.Fatalf("retrieve: %d %s, refreshes %d", got.status, got.body, k.calls.Load())
	}
	if b := bearers(e.up, "a"); len(b) != 3 || b[1] != oldToken("a") || b[2] != newToken("a") {
		t.Fatalf("tokens %q", b)
	}
	if st := stateOf(t, e.sched, "a"); !st.CoolingUntil.IsZero() {
		t.Fatalf("cooling after a renewed call: %+v", st)
	}

	// Rotated again, and the renewal fails.
	e.up.SetKey("a", "oat-a-LATERCANARY-z1x2c3v4b5n6")
	k.fail = func(_ context.Context, rejected string) (string, error) {
		return "", errors.New("refresh token " + rejected + " revoked")
	}
	got = e.call(http.MethodGet, "/v1/responses/"+id, relaytestenv.ClientKey)
	if got.status != 401 || strings.Contains(string(got.body), "CANARY") {
		t.Fatalf("retrieve after a failed renewal: %d %s", got.status, got.body)
	}
	st := stateOf(t, e.sched, "a")
	if st.CoolingReason != scheduler.EventUnauthorized ||
		st.CoolingDetail != "401: the upstream rejected the credentials; credential refresh failed: refresh token [redacted] revoked" {
		t.Fatalf("a: %q %q", st.CoolingReason, st.CoolingDetail)
	}
}

// A WebSocket upstream whose handshake is refused with 401 is dialled
// again with the renewed token, for the same turn.
func TestRenewWebSocketHandshake(t *testing.T) {
	e := newWSEnv(t, true, "a")
	k := newRenewing("a")
	e.rh.Credentials = k
	e.up.SetKey("a", newToken("a"))
	c := e.dial()
	c.send(create(""))
	frames := c.recvTurn()
	if typeOf(last(frames)) != "response.completed" {
		t.Fatalf("turn: %v", frames)
	}
	// Two upgrades (the first refused), one message: the turn was sent
	// only on the socket dialled with the new token.
	messages := 0
	for _, q := range e.up.Requests() {
		if q.Method == "WS" {
			messages++
		}
	}
	if b := bearers(e.up, "a"); k.calls.Load() != 1 || messages != 1 || len(b) != 2 || b[0] != oldToken("a") || b[1] != newToken("a") {
		t.Fatalf("refreshes %d, messages %d, upgrade tokens %q", k.calls.Load(), messages, b)
	}
	if st := stateOf(t, e.sched, "a"); !st.CoolingUntil.IsZero() {
		t.Fatalf("cooling: %+v", st)
	}
	// The connection's next turn uses the socket dialled with the new token.
	c.send(create(""))
	if frames := c.recvTurn(); typeOf(last(frames)) != "response.completed" || k.calls.Load() != 1 || len(bearers(e.up, "a")) != 2 {
		t.Fatalf("second turn: %v", frames)
	}
}

// An error frame of status 401 on an open upstream socket (the token
// expired while the socket lived) is renewed too: the socket is dropped
// and the turn sent on a new one dialled with the renewed token.
func TestRenewWebSocketErrorFrame(t *testing.T) {
	e := newWSEnv(t, true, "a")
	k := newRenewing("a")
	e.rh.Credentials = k
	e.up.SetKey("a", oldToken("a"))
	c := e.dial()
	c.send(create(""))
	if frames := c.recvTurn(); typeOf(last(frames)) != "response.completed" {
		t.Fatalf("first turn: %v", frames)
	}
	e.up.Script("a", relaytest.Step{Status: 401})
	e.up.SetKey("a", newToken("a"))
	c.send(create(""))
	if frames := c.recvTurn(); typeOf(last(frames)) != "response.completed" {
		t.Fatalf("second turn: %v", frames)
	}
	if b := bearers(e.up, "a"); k.calls.Load() != 1 || len(b) != 2 || b[0] != oldToken("a") || b[1] != newToken("a") {
		t.Fatalf("refreshes %d, upgrade tokens %q", k.calls.Load(), b)
	}
	if st := stateOf(t, e.sched, "a"); !st.CoolingUntil.IsZero() {
		t.Fatalf("cooling: %+v", st)
	}
}

// TestRenewCanary: no token, rejected or renewed, reaches a log line, a
// client's answer, the snapshot or a usage record, whatever the renewal
// does, even when the host's refresh error quotes the rejected token.
func TestRenewCanary(t *testing.T) {
	ids := []string{"ok", "fails", "refused", "hangs"}
	e, k := newRenewEnv(t)
	for _, id := range ids {
		// Each serves its own model, so that each turn lands on the
		// account under test.
		e.addAccount(&scheduler.Account{ID: id, Models: []string{"m-" + id}})
		e.up.SetKey(id, newToken(id))
		k.current[id], k.next[id] = oldToken(id), []string{newToken(id)}
	}
	e.h.MaxAccountSwitches = -1
	e.h.HookTimeout = 50 * time.Millisecond
	stuck, _ := stuckHook(t)
	k.next["refused"] = []string{"oat-refused-THIRDCANARY-m4n5b6v7c8x9"}
	secrets := []string{k.next["refused"][0]}
	for _, id := range ids {
		secrets = append(secrets, oldToken(id), newToken(id))
	}
	k.fail = func(ctx context.Context, rejected string) (string, error) {
		switch {
		case strings.Contains(rejected, "-fails-"):
			return "", fmt.Errorf("refresh for %s failed: %q", rejected, "invalid_grant")
		case strings.Contains(rejected, "-hangs-"):
			<-stuck
			return "", errors.New("late: " + rejected)
		}
		k.mu.Lock()
		defer k.mu.Unlock()
		for id, t := range k.current {
			if t == rejected && len(k.next[id]) > 0 {
				n := k.next[id][0]
				k.current[id], k.next[id] = n, k.next[id][1:]
				return n, nil
			}
		}
		return "", errors.New("unknown " + rejected)
	}
	var (
		mu   sync.Mutex
		seen strings.Builder
	)
	e.sched.OnAccountEvent = func(_ context.Context, ev scheduler.AccountEvent) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(&seen, "event %+v\n", ev)
	}
	for _, id := range ids {
		for _, body := range []string{`{"model":"m-` + id + `","input":"hi"}`, `{"model":"m-` + id + `","stream":true,"input":"hi"}`} {
			e.sched.Recover(id)
			r := e.do(body)
			snap, _ := json.Marshal(e.sched.Snapshot())
			mu.Lock()
			fmt.Fprintf(&seen, "%d %v\n%s\n%s\n", r.status, r.header, r.body, snap)
			mu.Unlock()
		}
	}
	recs, _ := json.Marshal(e.sink.all())
	mu.Lock()
	out := seen.String() + e.logs.String() + string(recs)
	mu.Unlock()
	for _, p := range canaryParts(secrets...) {
		if i := strings.Index(out, p); i >= 0 {
			t.Fatalf("token part %q leaked:\n...%s...", p, out[max(0, i-200):min(len(out), i+200)])
		}
	}
	// What was scanned says what happened.
	for _, want := range []string{"credential refresh failed", "[redacted]", "the renewed token was rejected too", "did not return in time", `"cooling_detail"`} {
		if !strings.Contains(out, want) {
			t.Fatalf("%q not in what was scanned:\n%s", want, out)
		}
	}
}

// A client that leaves while its turn waits for a renewal stops waiting;
// the renewal goes on (others may share it), and the account is not
// blamed for the client's leaving.
func TestRenewClientGone(t *testing.T) {
	e, k := newRenewEnv(t, "a")
	release := make(chan struct{})
	releaseOnce := sync.OnceFunc(func() { close(release) })
	t.Cleanup(releaseOnce)
	k.gate = func(context.Context) { <-release }
	cancel, done := e.abandonable(textReq)
	waitUntil(t, "the turn to wait for the renewal", func() bool { return relay.RenewWaiting(e.h) == 1 })
	cancel()
	<-done
	waitUntil(t, "the turn to stop waiting", func() bool { return relay.RenewWaiting(e.h) == 0 })
	releaseOnce()
	waitUntil(t, "the renewal to end", func() bool {
		k.mu.Lock()
		defer k.mu.Unlock()
		return k.current["a"] == newToken("a")
	})
	// The renewal ended on its own: the next turn has the new token.
	if r := e.do(textReq); r.status != 200 || k.calls.Load() != 1 {
		t.Fatalf("next turn: %d, refreshes %d", r.status, k.calls.Load())
	}
	if b := bearers(e.up, "a"); len(b) != 2 || b[1] != newToken("a") {
		t.Fatalf("tokens %q", b)
	}
	if st := stateOf(t, e.sched, "a"); !st.CoolingUntil.IsZero() {
		t.Fatalf("cooling after a client left: %+v", st)
	}
	// The first turn reached an upstream (its 401): client_gone.
	if recs := e.sink.all(); len(recs) != 2 || recs[0].Status != "client_gone" || recs[1].Status != "completed" {
		t.Fatalf("records %+v", recs)
	}
}
