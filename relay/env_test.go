package relay_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/concurrency"
	"github.com/relaykit/responsesrelay/internal/leakcheck"
	"github.com/relaykit/responsesrelay/relay"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/relaykit/responsesrelay/scheduler"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// env is a relay in front of the fake upstream, as a host would mount it.
type env struct {
	t     *testing.T
	up    *relaytest.Server
	pool  *scheduler.StaticPool
	sched *scheduler.Scheduler
	h     *relay.Handler
	srv   *httptest.Server
	sink  *recordingSink
	logs  *syncBuffer
	subj  *relay.Subject
	lim   *concurrency.Memory // the user slots
	keys  scheduler.StaticKeys
	accts []string
	// gone counts requests whose client went away while the relay was
	// still serving them.
	gone atomic.Int64
}

// serve is the relay as mounted, counting clients that leave mid-request
// so that tests can wait for the relay to have seen it.
func (e *env) serve(w http.ResponseWriter, r *http.Request) {
	stop := context.AfterFunc(r.Context(), func() { e.gone.Add(1) })
	e.h.ServeHTTP(w, r)
	stop()
}

// waitGone waits until n clients have left mid-request.
func (e *env) waitGone(n int64) {
	e.t.Helper()
	waitUntil(e.t, "the relay to see the client leave", func() bool { return e.gone.Load() >= n })
}

type recordingSink struct {
	mu   sync.Mutex
	recs []billing.Usage
}

func (s *recordingSink) Record(_ context.Context, u billing.Usage) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recs = append(s.recs, u)
	return nil
}

func (s *recordingSink) all() []billing.Usage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]billing.Usage(nil), s.recs...)
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newEnv starts the fake upstream and a relay with one account per name
// (all in group "g", equal priority unless changed through env.pool).
// Cleanup closes everything and asserts that no user or account slot is
// still held and no goroutine the test started is left.
func newEnv(t *testing.T, accounts ...string) *env {
	t.Helper()
	leakcheck.Check(t) // runs after every cleanup below: nothing may outlive the test
	e := &env{t: t, up: relaytest.NewServer(), pool: scheduler.NewStaticPool(), sink: &recordingSink{},
		logs: &syncBuffer{}, keys: scheduler.StaticKeys{}, accts: accounts}
	e.accts = nil
	for _, name := range accounts {
		e.addAccount(&scheduler.Account{ID: name})
	}
	e.sched = &scheduler.Scheduler{Pool: e.pool}
	e.subj = &relay.Subject{UserID: "u1", APIKeyID: "k1", GroupID: "g"}
	e.lim = concurrency.NewMemory()
	e.h = &relay.Handler{
		Scheduler:   e.sched,
		Limiter:     e.lim,
		Credentials: e.keys,
		Usage:       e.sink,
		Logger:      slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Authenticate: func(r *http.Request) (*relay.Subject, error) {
			if r.Header.Get("Authorization") != "Bearer rk-client" {
				return nil, nil
			}
			s := *e.subj
			return &s, nil
		},
	}
	e.srv = httptest.NewServer(http.HandlerFunc(e.serve))
	t.Cleanup(func() {
		e.srv.CloseClientConnections()
		e.srv.Close()
		e.up.Close()
		e.h.CloseIdleConnections()
		http.DefaultTransport.(*http.Transport).CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := e.h.Wait(ctx); err != nil {
			t.Errorf("turns still active after the test: %d", e.h.Active())
		}
		// A hook abandoned by a turn and released at cleanup gives back the
		// slot it took late, on its own goroutine: wait for that, bounded.
		held := func() (user int, accts map[string]int) {
			accts = map[string]int{}
			for _, a := range e.accts {
				if n := schedInFlight(e.sched, a); n != 0 {
					accts[a] = n
				}
			}
			return e.lim.InFlight("user:" + e.subj.UserID), accts
		}
		leakcheck.Settle(5*time.Second, func() bool { u, a := held(); return u == 0 && len(a) == 0 })
		if u, accts := held(); u != 0 || len(accts) != 0 {
			t.Errorf("slots held after the test: user %d, accounts %v", u, accts)
		}
	})
	return e
}

// addAccount adds an account on the fake upstream (named by its ID) to
// group "g", with a key and the slot check at cleanup.
func (e *env) addAccount(a *scheduler.Account) {
	if a.BaseURL == "" {
		a.BaseURL = e.up.BaseURL(a.ID)
	}
	if a.Concurrency == 0 {
		a.Concurrency = 8
	}
	e.pool.Add("g", a)
	e.keys[a.ID] = "sk-test-" + a.ID + "-0123456789abcdef"
	e.accts = append(e.accts, a.ID)
}

// post sends a body to the relay with the client key.
func (e *env) post(body string, hdr ...string) *http.Response {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/responses", strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer rk-client")
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp
}

// result is a relay answer read whole.
type result struct {
	status int
	header http.Header
	body   []byte
	events []relaytest.Event
}

func (e *env) do(body string, hdr ...string) result {
	e.t.Helper()
	resp := e.post(body, hdr...)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("reading relay answer: %v", err)
	}
	r := result{status: resp.StatusCode, header: resp.Header, body: b}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		evs, err := relaytest.ReadSSE(bytes.NewReader(b))
		if err != nil {
			e.t.Fatalf("relay sent bad SSE: %v\n%s", err, b)
		}
		r.events = evs
	}
	return r
}

// apiErr decodes an OpenAI-shaped error body and checks all four keys.
func apiErr(t *testing.T, body []byte) (typ, msg, param, code string) {
	t.Helper()
	var v struct {
		Error map[string]any `json:"error"`
	}
	if err := json.Unmarshal(body, &v); err != nil || v.Error == nil {
		t.Fatalf("not an OpenAI error: %s", body)
	}
	for _, k := range []string{"message", "type", "param", "code"} {
		if _, ok := v.Error[k]; !ok {
			t.Fatalf("error lacks %q: %s", k, body)
		}
	}
	str := func(k string) string { s, _ := v.Error[k].(string); return s }
	return str("type"), str("message"), str("param"), str("code")
}

func (r result) types() []string {
	var out []string
	for _, ev := range r.events {
		out = append(out, ev.Type)
	}
	return out
}

// lastType is the type of the last event.
func (r result) lastType() string {
	if len(r.events) == 0 {
		return ""
	}
	return r.events[len(r.events)-1].Type
}

func countType(r result, typ string) int {
	n := 0
	for _, ev := range r.events {
		if ev.Type == typ {
			n++
		}
	}
	return n
}

// waitUntil polls cond, for state with no event to wait on (slot counts
// released by another goroutine).
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

const textReq = `{"model":"gpt-test","input":"hello there"}`
const streamReq = `{"model":"gpt-test","stream":true,"input":"hello there"}`

// holdOne sends textReq while the next request to account "a" is held at
// the upstream, and returns once it is in flight there. release lets it
// finish; first yields its answer.
func (e *env) holdOne() (release func(), first <-chan result) {
	e.t.Helper()
	ch := make(chan struct{})
	e.up.Script("a", relaytest.Step{Hold: ch})
	res := make(chan result, 1)
	go func() { res <- e.do(textReq) }()
	e.waitInFlight("a", 1)
	var once sync.Once
	return func() { once.Do(func() { close(ch) }) }, res
}

// waitInFlight waits until account has n requests at the upstream.
func (e *env) waitInFlight(account string, n int) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.up.Wait(ctx, func() bool { return e.up.InFlight(account) == n }); err != nil {
		e.t.Fatalf("waiting for %d requests in flight on %s: %v", n, account, err)
	}
}

// abandonable sends body in the background on a context the test cancels,
// as a client that closes its connection. done is closed once the client
// side has returned.
func (e *env) abandonable(body string) (cancel func(), done <-chan struct{}) {
	ctx, cancelCtx := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.srv.URL+"/v1/responses", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer rk-client")
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		if resp, err := e.srv.Client().Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	return cancelCtx, ch
}
