package relay_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"github.com/relaykit/responsesrelay/relay"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/relaykit/responsesrelay/scheduler"
)

// dialMany opens n connections at once and returns the accepted ones and
// the statuses of the refused ones.
func (e *wsEnv) dialMany(n int) (accepted []*websocket.Conn, refused []*http.Response) {
	e.t.Helper()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			ws, resp, err := websocket.Dial(ctx, e.wsURL(), &websocket.DialOptions{HTTPHeader: clientHeader})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				refused = append(refused, resp)
				return
			}
			accepted = append(accepted, ws)
		})
	}
	wg.Wait()
	e.t.Cleanup(func() {
		for _, ws := range accepted {
			ws.CloseNow()
		}
	})
	return accepted, refused
}

// TestLimitWSConnDefault: with MaxConnsPerKey 0 a key may hold
// ConnsPerConcurrency connections per concurrent turn it is allowed
// (DefaultMaxConnsPerKey when its concurrency is unlimited); the rest of a
// burst is refused with 429 before the upgrade. Negative is no cap.
func TestLimitWSConnDefault(t *testing.T) {
	for _, tc := range []struct {
		name        string
		concurrency int
		max         int
		want        int
	}{
		{"concurrency 8", 8, 0, 2 * 8},
		{"unlimited concurrency", 0, 0, 16},
		{"no cap", 8, -1, 40},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newWSEnv(t, true, "a")
			e.subj.Concurrency = tc.concurrency
			e.ws.MaxConnsPerKey = tc.max
			burst := 100
			if tc.max < 0 {
				burst = tc.want
			}
			accepted, refused := e.dialMany(burst)
			if len(accepted) != tc.want || len(refused) != burst-tc.want {
				t.Fatalf("%d accepted, %d refused of %d; want %d accepted", len(accepted), len(refused), burst, tc.want)
			}
			for _, resp := range refused {
				if resp == nil || resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
					t.Fatalf("refused connection answered %v", resp)
				}
			}
			if relay.WebSocketConns(e.rh) != tc.want || len(e.up.Requests()) != 0 {
				t.Fatalf("open %d, upstream requests %d", relay.WebSocketConns(e.rh), len(e.up.Requests()))
			}
			for _, ws := range accepted {
				ws.Close(websocket.StatusNormalClosure, "")
			}
			waitUntil(t, "the connections to end", func() bool { return relay.WebSocketConns(e.rh) == 0 })
			if c, resp := e.dialStatus(clientHeader); c == nil {
				t.Fatalf("no place after the burst closed: %v", resp)
			}
		})
	}
}

// TestLimitWSMessageOverBody: a client message is capped by the relay's
// MaxBodyBytes: one byte over closes with 1009 before any upstream is
// asked; exactly the limit is served.
func TestLimitWSMessageOverBody(t *testing.T) {
	const limit = 4096
	msg := func(n int) string {
		m := create(`,"instructions":"`)
		pad := n - len(m) - len(`"}`)
		return m + strings.Repeat("x", pad) + `"}`
	}
	{
		e := newWSEnv(t, true, "a")
		e.rh.MaxBodyBytes = limit
		c := e.dial()
		c.send(msg(limit))
		if f := c.recvTurn(); typeOf(last(f)) != "response.completed" {
			t.Fatalf("MaxBodyBytes %d: a message of MaxBodyBytes: %v", limit, f)
		}
		c.send(msg(limit + 1))
		if code := c.closeStatus(); code != websocket.StatusMessageTooBig {
			t.Fatalf("MaxBodyBytes %d: close %d, want 1009", limit, code)
		}
		turns := 0
		for _, s := range e.up.Served() {
			if s.Status != "upgraded" {
				turns++
			}
		}
		if turns != 1 {
			t.Fatalf("MaxBodyBytes %d: upstream served %d turns, want 1", limit, turns)
		}
	}
}

// TestUpstreamDialNoRedirect: an upstream that answers the handshake with
// a redirect is a failed dial: the turn fails over, and the host the
// redirect names sees no request, let alone the account's token.
func TestUpstreamDialNoRedirect(t *testing.T) {
	e := newWSEnv(t, true)
	var target atomic.Int32
	var leaked atomic.Value
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		target.Add(1)
		leaked.Store(r.Header.Get("Authorization"))
		w.WriteHeader(http.StatusTeapot)
	}))
	defer other.Close()
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+"/v1/responses", http.StatusTemporaryRedirect)
	}))
	defer redirect.Close()
	e.addAccount(&scheduler.Account{ID: "moved", BaseURL: redirect.URL + "/v1", WebSocket: true})
	e.addAccount(&scheduler.Account{ID: "spare", WebSocket: true, Priority: 1})
	c := e.dial()
	c.send(create(``))
	if f := c.recvTurn(); typeOf(last(f)) != "response.completed" {
		t.Fatalf("frames %v", f)
	}
	if n := target.Load(); n != 0 {
		t.Fatalf("the redirect target got %d requests (Authorization %q)", n, leaked.Load())
	}
	if err := waitRecords(e, 1); err != nil {
		t.Fatal(err)
	}
	if r := e.sink.Records()[0]; r.AccountID != "spare" || r.Attempts != 2 {
		t.Fatalf("record %+v", r)
	}
}

// TestUpstreamDialUsesRelayTransport: upstream sockets are dialed through
// the relay's *http.Transport: its RootCAs make a TLS upstream reachable,
// and its DialContext makes the connections.
func TestUpstreamDialUsesRelayTransport(t *testing.T) {
	e := newWSEnv(t, true)
	up := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer ws.CloseNow()
		if playTurn(r.Context(), ws, "resp_tls") == nil {
			ws.Read(r.Context()) // until the relay closes the socket
		}
	}))
	defer up.Close()
	roots := x509.NewCertPool()
	roots.AddCert(up.Certificate())
	var dials atomic.Int32
	var d net.Dialer
	e.rh.Transport = &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return d.DialContext(ctx, network, addr)
		},
	}
	e.addAccount(&scheduler.Account{ID: "tls", BaseURL: up.URL + "/v1", WebSocket: true})
	c := e.dial()
	c.send(create(``))
	if f := c.recvTurn(); typeOf(last(f)) != "response.completed" || !strings.Contains(last(f), "resp_tls") {
		t.Fatalf("frames %v", f)
	}
	if n := dials.Load(); n != 1 {
		t.Fatalf("%d dials through the relay's transport, want 1", n)
	}
}
