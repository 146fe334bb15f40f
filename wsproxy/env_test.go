package wsproxy_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/concurrency"
	"github.com/relaykit/responsesrelay/internal/leakcheck"
	"github.com/relaykit/responsesrelay/relay"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/relaykit/responsesrelay/scheduler"
	"github.com/relaykit/responsesrelay/wsproxy"
	"github.com/tidwall/gjson"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

type env struct {
	t     *testing.T
	up    *relaytest.Server
	pool  *scheduler.StaticPool
	sched *scheduler.Scheduler
	rh    *relay.Handler
	lim   *concurrency.Memory // the user slots
	wh    *wsproxy.Handler
	srv   *httptest.Server
	sink  *billing.MemorySink
	keys  scheduler.StaticKeys
	accts []string
	subj  relay.Subject
	logs  *syncBuffer
	mu    sync.Mutex
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

// newEnv: a relay with WebSocket mode in front of the fake upstream, one
// account per name; ws says whether they support upstream WebSockets.
func newEnv(t *testing.T, ws bool, accounts ...string) *env {
	t.Helper()
	leakcheck.Check(t)
	e := &env{t: t, up: relaytest.NewServer(), pool: scheduler.NewStaticPool(), sink: &billing.MemorySink{}, keys: scheduler.StaticKeys{},
		logs: &syncBuffer{}}
	e.subj = relay.Subject{UserID: "u1", APIKeyID: "k1", GroupID: "g", Concurrency: 2}
	for i, name := range accounts {
		e.addAccount(&scheduler.Account{ID: name, WebSocket: ws, Priority: i})
	}
	logger := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.sched = &scheduler.Scheduler{Pool: e.pool, Logger: logger}
	e.lim = concurrency.NewMemory()
	e.rh = &relay.Handler{
		Limiter:     e.lim,
		Scheduler:   e.sched,
		Credentials: e.keys,
		Usage:       e.sink,
		Logger:      logger,
		Authenticate: func(r *http.Request) (*relay.Subject, error) {
			if r.Header.Get("Authorization") != "Bearer rk-client" {
				return nil, nil
			}
			e.mu.Lock()
			defer e.mu.Unlock()
			s := e.subj
			return &s, nil
		},
	}
	e.wh = &wsproxy.Handler{Relay: e.rh}
	e.srv = httptest.NewServer(e.wh)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := e.wh.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		e.srv.CloseClientConnections()
		e.srv.Close()
		e.up.Close()
		e.rh.CloseIdleConnections()
		http.DefaultTransport.(*http.Transport).CloseIdleConnections()
		if err := e.rh.Wait(ctx); err != nil {
			t.Errorf("turns still active after the test: %d", e.rh.Active())
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
			return e.lim.InFlight("user:" + "u1"), accts
		}
		leakcheck.Settle(5*time.Second, func() bool { u, a := held(); return u == 0 && len(a) == 0 })
		if u, accts := held(); u != 0 || len(accts) != 0 {
			t.Errorf("slots held after the test: user %d, accounts %v", u, accts)
		}
	})
	return e
}

func (e *env) addAccount(a *scheduler.Account) {
	if a.BaseURL == "" {
		a.BaseURL = e.up.BaseURL(a.ID)
	}
	if a.Concurrency == 0 {
		a.Concurrency = 4
	}
	e.pool.Add("g", a)
	e.keys[a.ID] = "sk-test-" + a.ID
	e.accts = append(e.accts, a.ID)
}

// client is a test WebSocket client of the relay.
type client struct {
	t  *testing.T
	ws *websocket.Conn
}

func (e *env) dial() *client {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	url := "ws" + strings.TrimPrefix(e.srv.URL, "http") + "/v1/responses"
	ws, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer rk-client"}}})
	if err != nil {
		e.t.Fatalf("dial: %v", err)
	}
	ws.SetReadLimit(64 << 20)
	c := &client{t: e.t, ws: ws}
	e.t.Cleanup(func() { ws.CloseNow() })
	return c
}

func (c *client) send(msg string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.ws.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// recvTurn reads frames until a terminal event or an error frame.
func (c *client) recvTurn() []string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []string
	for {
		_, data, err := c.ws.Read(ctx)
		if err != nil {
			c.t.Fatalf("read after %d frames: %v", len(out), err)
		}
		out = append(out, string(data))
		switch gjson.GetBytes(data, "type").String() {
		case "response.completed", "response.incomplete", "response.failed", "error":
			return out
		}
	}
}

// closeStatus reads until the relay closes the socket and returns the code.
func (c *client) closeStatus() websocket.StatusCode {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		if _, _, err := c.ws.Read(ctx); err != nil {
			return websocket.CloseStatus(err)
		}
	}
}

func typeOf(frame string) string { return gjson.Get(frame, "type").String() }

func last(frames []string) string { return frames[len(frames)-1] }

func create(extra string) string {
	return `{"type":"response.create","model":"gpt-test","input":"hello there"` + extra + `}`
}

// waitUntil polls state that has no event to wait on (slots released by
// the relay right after the terminal frame went out).
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
