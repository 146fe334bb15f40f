// Package relayenv is the bench the examples' adapter tests share: a
// relay.Handler in front of the relaytest fake upstream, served by
// httptest, torn down with every turn waited for.
package relayenv

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/relay"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/relaykit/responsesrelay/scheduler"
)

// ClientKey is the bearer key the relay accepts: subject u1, key k1,
// group g, at most 4 turns at once.
const ClientKey = "rk-client"

// Env is one relay and its fake upstream.
type Env struct {
	T     testing.TB
	Up    *relaytest.Server
	Sched *scheduler.Scheduler
	H     *relay.Handler
	Srv   *httptest.Server
	// Wrap, when set before the first request, wraps the relay as a
	// host's middleware would.
	Wrap func(http.Handler) http.Handler
}

// New serves accounts (group "g", BaseURL pointed at the fake, key
// "sk-test-"+ID) through a relay. setup, if set, completes the handler
// (an Observer, the scheduler's OnAccountEvent) before any request. At
// cleanup everything is closed and every turn waited for.
func New(t testing.TB, setup func(*relay.Handler), accounts ...*scheduler.Account) *Env {
	t.Helper()
	e := &Env{T: t, Up: relaytest.NewServer()}
	pool := scheduler.NewStaticPool()
	keys := scheduler.StaticKeys{}
	for _, a := range accounts {
		a.BaseURL = e.Up.BaseURL(a.ID)
		pool.Add("g", a)
		keys[a.ID] = "sk-test-" + a.ID
	}
	e.Sched = &scheduler.Scheduler{Pool: pool}
	e.H = &relay.Handler{
		Scheduler:   e.Sched,
		Credentials: keys,
		Logger:      slog.New(slog.DiscardHandler),
		Authenticate: func(r *http.Request) (*relay.Subject, error) {
			if r.Header.Get("Authorization") != "Bearer "+ClientKey {
				return nil, nil
			}
			return &relay.Subject{UserID: "u1", APIKeyID: "k1", GroupID: "g", Concurrency: 4}, nil
		},
	}
	if setup != nil {
		setup(e.H)
	}
	e.Srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var h http.Handler = e.H
		if e.Wrap != nil {
			h = e.Wrap(h)
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		e.Srv.CloseClientConnections()
		e.Srv.Close()
		e.Up.Close()
		e.H.CloseIdleConnections()
		e.Wait()
	})
	return e
}

// Wait waits until every turn the relay started has ended, so its
// TurnEnd has been observed.
func (e *Env) Wait() {
	e.T.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.H.Shutdown(ctx); err != nil {
		e.T.Fatalf("turns still active: %d", e.H.Active())
	}
}

// Request is a POST /v1/responses of body with key.
func (e *Env) Request(ctx context.Context, body, key string) *http.Request {
	e.T.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.Srv.URL+"/v1/responses", strings.NewReader(body))
	if err != nil {
		e.T.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	return req
}

// Do sends body with key, reads the whole answer and waits for the turn
// to end.
func (e *Env) Do(body, key string) (*http.Response, []byte) {
	e.T.Helper()
	resp, err := e.Srv.Client().Do(e.Request(context.Background(), body, key))
	if err != nil {
		e.T.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		e.T.Fatal(err)
	}
	e.Wait()
	return resp, b
}

// LeaveMidStream starts a streaming turn on account, whose upstream pauses
// after its first delta and never resumes, reads up to that delta, runs
// during (the turn is streaming then), leaves as a client would, and
// waits for the turn to end. The turn can only end through the client
// leaving and the drain that follows, which DrainTimeout bounds: set it
// short.
func (e *Env) LeaveMidStream(account, body string, during func()) {
	e.T.Helper()
	// The fifth event is the first delta.
	e.Up.Script(account, relaytest.Step{After: 5, Hold: make(chan struct{})})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp, err := e.Srv.Client().Do(e.Request(ctx, body, ClientKey))
	if err != nil {
		e.T.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	for {
		line, err := br.ReadString('\n')
		if strings.Contains(line, "response.output_text.delta") {
			break
		}
		if err != nil {
			e.T.Fatalf("stream ended before the first delta: %v", err)
		}
	}
	if during != nil {
		during()
	}
	cancel()
	resp.Body.Close()
	e.Wait()
}
