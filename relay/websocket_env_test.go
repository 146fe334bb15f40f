package relay_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/concurrency"
	"github.com/relaykit/responsesrelay/internal/relaytestenv"
	"github.com/relaykit/responsesrelay/relay"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/relaykit/responsesrelay/scheduler"
	"github.com/tidwall/gjson"
)

// wsEnv is a relay with WebSocket mode in front of the fake upstream: the
// shared test environment, with its pieces under the names the WebSocket
// tests use.
type wsEnv struct {
	*relaytestenv.Env
	t     *testing.T
	up    *relaytest.Server
	pool  *scheduler.StaticPool
	sched *scheduler.Scheduler
	rh    *relay.Handler
	lim   *concurrency.Memory     // the user slots
	ws    *relay.WebSocketOptions // the relay's; set fields before the first dial
	srv   *httptest.Server
	sink  *billing.MemorySink
	keys  scheduler.StaticKeys
	accts []string
	subj  *relay.Subject // change under Mu once connections are open
	logs  *relaytestenv.Buffer
}

// newWSEnv: a relay with WebSocket mode in front of the fake upstream, one
// account per name (4 slots, priority in order); ws says whether they
// support upstream WebSockets. Cleanup shuts the relay down, then runs the
// shared checks: no turn active, no slot held, no goroutine left.
func newWSEnv(t *testing.T, ws bool, accounts ...string) *wsEnv {
	t.Helper()
	e := &wsEnv{Env: relaytestenv.New(t), t: t}
	e.AccountConcurrency = 4
	e.Subject.Concurrency = 2
	e.Sched.Logger = e.Relay.Logger
	for i, name := range accounts {
		e.AddAccount(&scheduler.Account{ID: name, WebSocket: ws, Priority: i})
	}
	e.ws = &relay.WebSocketOptions{}
	e.Relay.WebSocket = e.ws
	e.Mount(e.Relay)
	e.bind()
	// Registered after the shared checks, so it runs before them.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := e.rh.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if n := relay.LocalBytes(e.rh); n != 0 {
			t.Errorf("closed connections still hold %d bytes of conversation state", n)
		}
	})
	return e
}

// bind names the shared pieces; again after a change of Accounts.
func (e *wsEnv) bind() {
	e.up, e.pool, e.sched, e.rh, e.lim, e.srv = e.Up, e.Pool, e.Sched, e.Relay, e.Users, e.Srv
	e.sink, e.keys, e.accts, e.subj, e.logs = e.Sink, e.Keys, e.Accounts, e.Subject, e.Logs
}

func (e *wsEnv) addAccount(a *scheduler.Account) {
	e.AddAccount(a)
	e.bind()
}

// client is a test WebSocket client of the relay.
type client struct {
	t  *testing.T
	ws *websocket.Conn
}

func (e *wsEnv) dial() *client {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	url := "ws" + strings.TrimPrefix(e.srv.URL, "http") + "/v1/responses"
	ws, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + relaytestenv.ClientKey}}})
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

// completedTurn sends a response.create with extra fields, requires the
// turn to complete, and returns its response id.
func (c *client) completedTurn(extra string) string {
	c.t.Helper()
	c.send(create(extra))
	f := c.recvTurn()
	if typeOf(last(f)) != "response.completed" {
		c.t.Fatalf("turn %q: %v", extra, f)
	}
	return gjson.Get(last(f), "response.id").String()
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
