// Package relaytestenv is the test environment the relay's HTTP and WebSocket tests
// share: the fake upstream with a pool of accounts on it, a Scheduler, a
// relay.Handler with a concurrency.Memory user limiter in front of them, and
// the checks every test ends with (no turn still active, no user or account
// slot still held, no goroutine left behind).
//
// Only _test.go files use it; a test of this package fails when a non-test
// file of the module imports it.
package relaytestenv

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/concurrency"
	"github.com/relaykit/responsesrelay/internal/leakcheck"
	"github.com/relaykit/responsesrelay/relay"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/relaykit/responsesrelay/scheduler"
)

// ClientKey is the bearer token Authenticate accepts.
const ClientKey = "rk-client"

// patience bounds the end-of-test waits (turns to end, late slots to come
// back); this package's own tests shorten it.
var patience = 5 * time.Second

// Env is a relay.Handler in front of the fake upstream, as a host would
// mount it. Its fields are set by New; tests change the Handler's and the
// Scheduler's fields before the first request.
type Env struct {
	T     testing.TB
	Up    *relaytest.Server
	Pool  *scheduler.StaticPool // group "g"
	Sched *scheduler.Scheduler
	Relay *relay.Handler
	Users *concurrency.Memory // the relay's user slots
	Srv   *httptest.Server    // nil until Mount
	Sink  *billing.MemorySink // the relay's usage records
	Logs  *Buffer             // the relay's log, at debug level
	Keys  scheduler.StaticKeys

	// Subject is who a request with ClientKey authenticates as: user "u1",
	// key "k1", group "g" unless changed. Change it under Mu once requests
	// may be running.
	Subject *relay.Subject
	Mu      sync.Mutex

	// Accounts lists the IDs AddAccount added, for the slot check.
	Accounts []string
	// AccountConcurrency is the slot count AddAccount gives an account
	// without one; 0: 8.
	AccountConcurrency int
}

// New wires a relay over the fake upstream with no account yet and
// registers the end-of-test checks: after every cleanup registered later
// (those run first), it closes the servers and connections, then fails t
// when a turn is still active, a user or account slot is still held, or a
// goroutine started since New is still running.
func New(t testing.TB) *Env {
	t.Helper()
	leakcheck.Check(t) // verified after every cleanup below
	e := &Env{T: t, Up: relaytest.NewServer(), Pool: scheduler.NewStaticPool(), Sink: &billing.MemorySink{},
		Logs: &Buffer{}, Keys: scheduler.StaticKeys{}, Users: concurrency.NewMemory()}
	e.Subject = &relay.Subject{UserID: "u1", APIKeyID: "k1", GroupID: "g"}
	e.Sched = &scheduler.Scheduler{Pool: e.Pool}
	e.Relay = &relay.Handler{
		Scheduler:    e.Sched,
		Limiter:      e.Users,
		Credentials:  e.Keys,
		Usage:        e.Sink,
		Logger:       slog.New(slog.NewTextHandler(e.Logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Authenticate: e.authenticate,
	}
	t.Cleanup(e.close)
	return e
}

func (e *Env) authenticate(r *http.Request) (*relay.Subject, error) {
	if r.Header.Get("Authorization") != "Bearer "+ClientKey {
		return nil, nil
	}
	e.Mu.Lock()
	defer e.Mu.Unlock()
	s := *e.Subject
	return &s, nil
}

// Mount serves h (the relay as the test mounts it) on a new test server,
// closing the one mounted before.
func (e *Env) Mount(h http.Handler) {
	if e.Srv != nil {
		e.Srv.Close()
	}
	e.Srv = httptest.NewServer(h)
}

// AddAccount adds an account on the fake upstream (named by its ID) to
// group "g", with a key and the slot check at the end of the test.
func (e *Env) AddAccount(a *scheduler.Account) {
	if a.BaseURL == "" {
		a.BaseURL = e.Up.BaseURL(a.ID)
	}
	if a.Concurrency == 0 {
		a.Concurrency = 8
		if e.AccountConcurrency != 0 {
			a.Concurrency = e.AccountConcurrency
		}
	}
	e.Pool.Add("g", a)
	e.Keys[a.ID] = "sk-test-" + a.ID + "-0123456789abcdef"
	e.Accounts = append(e.Accounts, a.ID)
}

// WaitInFlight waits until account has n requests at the upstream.
func (e *Env) WaitInFlight(account string, n int) {
	e.T.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if err := e.Up.Wait(ctx, func() bool { return e.Up.InFlight(account) == n }); err != nil {
		e.T.Fatalf("waiting for %d requests in flight on %s: %v", n, account, err)
	}
}

// close is the end-of-test check.
func (e *Env) close() {
	t := e.T
	if e.Srv != nil {
		e.Srv.CloseClientConnections()
		e.Srv.Close()
	}
	e.Up.Close()
	e.Relay.CloseIdleConnections()
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if err := e.Relay.Shutdown(ctx); err != nil {
		t.Errorf("turns still active after the test: %d", e.Relay.Active())
	}
	// A hook abandoned by a turn and released at cleanup gives back the
	// slot it took late, on its own goroutine: wait for that, bounded.
	leakcheck.Settle(patience, func() bool { u, a := e.held(); return u == 0 && len(a) == 0 })
	if u, accts := e.held(); u != 0 || len(accts) != 0 {
		t.Errorf("slots held after the test: user %d, accounts %v", u, accts)
	}
}

// held is the user's slots and the accounts' slots still taken.
func (e *Env) held() (user int, accts map[string]int) {
	accts = map[string]int{}
	for _, a := range e.Accounts {
		if n := AccountInFlight(e.Sched, a); n != 0 {
			accts[a] = n
		}
	}
	e.Mu.Lock()
	key := "user:" + e.Subject.UserID
	e.Mu.Unlock()
	return e.Users.InFlight(key), accts
}

// Buffer is a log destination safe for concurrent writes.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String is everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// WaitUntil polls cond, for state with no event to wait on (slots released
// by another goroutine right after the answer went out), and fails t when
// it does not hold within five seconds.
func WaitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// AccountState is an account's entry in the Scheduler's Snapshot; the zero
// AccountState when it is not listed.
func AccountState(s *scheduler.Scheduler, id string) scheduler.AccountState {
	for _, as := range s.Snapshot() {
		if as.ID == id {
			return as
		}
	}
	return scheduler.AccountState{}
}

// AccountInFlight is how many Selections of the account s has not released.
func AccountInFlight(s *scheduler.Scheduler, id string) int { return AccountState(s, id).InFlight }

// CoolingUntil is the end of the account's cooldown; zero when not cooling.
func CoolingUntil(s *scheduler.Scheduler, id string) time.Time {
	return AccountState(s, id).CoolingUntil
}

// PassUpstreamErrors is a relay.Handler.MapError hook that answers with
// the upstream's own status and (masked) body whenever the body is JSON,
// as a host that trusts its upstreams might write.
func PassUpstreamErrors(ue *relay.UpstreamError) *relay.APIError {
	a := relay.MapUpstreamError(ue)
	if ue.Status > 0 {
		a.Status = ue.Status
	}
	if json.Valid(ue.Body) {
		a.Raw = ue.Body
	}
	return a
}

// WaitClosed fails the test when ch is not closed within a generous
// deadline (a bound on a hang, not a timing assertion).
func WaitClosed(t testing.TB, what string, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// DecodedText is every string in a JSON document as a client's decoder
// reads it, and each once more decoded as JSON string content (JSON quoted
// in a message). Text that is not JSON is taken as it is.
func DecodedText(b []byte) string {
	var v any
	if json.Unmarshal(b, &v) != nil {
		return string(b)
	}
	var out strings.Builder
	var walk func(any)
	walk = func(v any) {
		switch x := v.(type) {
		case string:
			out.WriteString(x + "\n")
			var again string
			if json.Unmarshal([]byte(`"`+x+`"`), &again) == nil {
				out.WriteString(again + "\n")
			}
			var inner any
			if json.Unmarshal([]byte(x), &inner) == nil {
				walk(inner)
			}
		case map[string]any:
			for k, e := range x {
				out.WriteString(k + "\n")
				walk(e)
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	walk(v)
	return out.String()
}
