package relay_test

import (
	"context"
	"fmt"
	"github.com/relaykit/responsesrelay/relay"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/relaykit/responsesrelay/scheduler"
)

// waitSignal waits, bounded, for one signal on ch.
func waitSignal(t *testing.T, what string, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// TestUpstreamIdleSocketClosed: an upstream socket no turn used for
// UpstreamIdleTimeout is closed by the relay; the connection's next turn
// dials a new one on the same account, not counted against it.
func TestUpstreamIdleSocketClosed(t *testing.T) {
	e := newWSEnv(t, true)
	e.ws.UpstreamIdleTimeout = time.Millisecond
	closed := make(chan struct{}, 4)
	up := newScriptedSocket(t, func(ctx context.Context, ws *websocket.Conn, n int) {
		if playTurn(ctx, ws, fmt.Sprintf("resp_%d", n)) != nil {
			return
		}
		if _, _, err := ws.Read(ctx); err != nil {
			closed <- struct{}{} // the relay closed the idle socket
		}
	})
	e.addAccount(&scheduler.Account{ID: "x", BaseURL: up.srv.URL + "/v1", WebSocket: true})
	c := e.dial()
	for turn := 1; turn <= 2; turn++ {
		c.send(create(``))
		if f := c.recvTurn(); typeOf(last(f)) != "response.completed" || !strings.Contains(last(f), fmt.Sprintf("resp_%d", turn)) {
			t.Fatalf("turn %d: %v", turn, f)
		}
		waitSignal(t, "the idle socket to be closed", closed)
	}
	if n := up.dials.Load(); n != 2 {
		t.Fatalf("%d upstream sockets for 2 turns with an idle close between, want 2", n)
	}
	if err := waitRecords(e, 2); err != nil {
		t.Fatal(err)
	}
	for i, r := range e.sink.Records() {
		if r.AccountID != "x" || r.Attempts != 1 {
			t.Fatalf("record %d: %+v", i, r)
		}
	}
	for _, st := range e.sched.Snapshot() {
		if st.ID == "x" && st.ConsecutiveFailures != 0 {
			t.Fatalf("account x after an idle close: %+v", st)
		}
	}
}

// socketCounter is an upstream that counts its open WebSocket sockets and
// its bridged POSTs.
type socketCounter struct {
	h     http.Handler
	ended chan struct{}

	mu             sync.Mutex
	open, max      int
	upgrades, post int
}

func (s *socketCounter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		s.mu.Lock()
		s.post++
		s.mu.Unlock()
		s.h.ServeHTTP(w, r)
		return
	}
	s.mu.Lock()
	s.upgrades++
	s.open++
	s.max = max(s.max, s.open)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.open--
		s.mu.Unlock()
		s.ended <- struct{}{}
	}()
	s.h.ServeHTTP(w, r)
}

func (s *socketCounter) counts() (open, max, upgrades, post int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.open, s.max, s.upgrades, s.post
}

// TestUpstreamSocketsPerAccountCapped: an account's open upstream sockets
// across connections stay within MaxUpstreamSockets (by default twice its
// Concurrency); a turn that would open one more goes through the HTTP
// bridge on the same account, and a socket closed frees a place.
func TestUpstreamSocketsPerAccountCapped(t *testing.T) {
	e := newWSEnv(t, true)
	e.subj.Concurrency = 4 // room for the connections
	up := relaytest.New()
	counter := &socketCounter{h: up, ended: make(chan struct{}, 8)}
	srv := httptest.NewServer(counter)
	t.Cleanup(srv.Close)
	e.addAccount(&scheduler.Account{ID: "a", BaseURL: srv.URL + "/a/v1", WebSocket: true, Concurrency: 1})

	const conns = 4
	clients := make([]*client, conns)
	for i := range clients {
		clients[i] = e.dial()
		clients[i].send(create(``))
		if f := clients[i].recvTurn(); typeOf(last(f)) != "response.completed" {
			t.Fatalf("connection %d: %v", i, f)
		}
	}
	open, most, upgrades, post := counter.counts()
	if most > 2 || open != 2 || upgrades != 2 || post != conns-2 {
		t.Fatalf("open %d (most %d), upgrades %d, bridged %d; want at most 2 sockets and 2 bridged turns", open, most, upgrades, post)
	}
	if err := waitRecords(e, conns); err != nil {
		t.Fatal(err)
	}
	for i, r := range e.sink.Records() {
		if r.AccountID != "a" || r.Attempts != 1 {
			t.Fatalf("record %d: %+v", i, r)
		}
	}
	for _, st := range e.sched.Snapshot() {
		if st.ID == "a" && st.ConsecutiveFailures != 0 {
			t.Fatalf("account a after bridged turns: %+v", st)
		}
	}

	// A connection that holds a socket ends: its place goes to the next
	// turn that dials.
	clients[0].ws.Close(websocket.StatusNormalClosure, "")
	waitSignal(t, "the closed connection's upstream socket to end", counter.ended)
	// The upstream sees the socket end as the relay closes it, a moment
	// before the relay counts it as given back.
	waitUntil(t, "the relay to give the place back", func() bool { return relay.UpstreamSockets(e.rh, "a") == 1 })
	clients[2].send(create(``))
	if f := clients[2].recvTurn(); typeOf(last(f)) != "response.completed" {
		t.Fatalf("after a place freed: %v", f)
	}
	if _, most, upgrades, _ := counter.counts(); upgrades != 3 || most > 2 {
		t.Fatalf("upgrades %d (most open %d), want a third socket within the cap", upgrades, most)
	}
}
