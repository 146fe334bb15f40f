package relay_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/concurrency"
	"github.com/relaykit/responsesrelay/internal/leakcheck"
	"github.com/relaykit/responsesrelay/internal/relaytestenv"
	"github.com/relaykit/responsesrelay/relay"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/relaykit/responsesrelay/scheduler"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// env is a relay in front of the fake upstream, as a host would mount it:
// the shared test environment, with its pieces under the names this
// package's tests use.
type env struct {
	*relaytestenv.Env
	t     *testing.T
	up    *relaytest.Server
	pool  *scheduler.StaticPool
	sched *scheduler.Scheduler
	h     *relay.Handler
	srv   *httptest.Server
	sink  recorded
	logs  *relaytestenv.Buffer
	subj  *relay.Subject
	lim   *concurrency.Memory // the user slots
	keys  scheduler.StaticKeys
	accts []string
	// gone counts requests whose client went away while the relay was
	// still serving them.
	gone atomic.Int64
}

var (
	waitUntil     = relaytestenv.WaitUntil
	schedInFlight = relaytestenv.AccountInFlight
	coolingUntil  = relaytestenv.CoolingUntil
)

// recorded reads the usage records the relay wrote.
type recorded struct{ *billing.MemorySink }

func (r recorded) all() []billing.Usage { return r.Records() }

// newEnv starts the fake upstream and a relay with one account per name
// (all in group "g", equal priority unless changed through env.pool).
// Cleanup closes everything and asserts that no turn is active, no user or
// account slot is still held and no goroutine the test started is left.
func newEnv(t *testing.T, accounts ...string) *env {
	t.Helper()
	e := &env{Env: relaytestenv.New(t), t: t}
	for _, name := range accounts {
		e.AddAccount(&scheduler.Account{ID: name})
	}
	e.mount(http.HandlerFunc(e.serve))
	return e
}

// bind names the shared pieces; again after a change of Srv or Accounts.
func (e *env) bind() {
	e.up, e.pool, e.sched, e.h, e.srv = e.Up, e.Pool, e.Sched, e.Relay, e.Srv
	e.sink, e.logs, e.subj, e.lim, e.keys, e.accts = recorded{e.Sink}, e.Logs, e.Subject, e.Users, e.Keys, e.Accounts
}

// mount serves h in front of the relay instead of what was mounted.
func (e *env) mount(h http.Handler) {
	e.Mount(h)
	e.bind()
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

// addAccount adds an account on the fake upstream (named by its ID) to
// group "g", with a key and the slot check at cleanup.
func (e *env) addAccount(a *scheduler.Account) {
	e.AddAccount(a)
	e.bind()
}

// post sends a body to the relay with the client key.
func (e *env) post(body string, hdr ...string) *http.Response {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/responses", strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+relaytestenv.ClientKey)
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
	e.WaitInFlight("a", 1)
	var once sync.Once
	return func() { once.Do(func() { close(ch) }) }, res
}

// abandonable sends body in the background on a context the test cancels,
// as a client that closes its connection. done is closed once the client
// side has returned.
func (e *env) abandonable(body string) (cancel func(), done <-chan struct{}) {
	ctx, cancelCtx := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.srv.URL+"/v1/responses", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+relaytestenv.ClientKey)
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		if resp, err := e.srv.Client().Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	return cancelCtx, ch
}
