package relay_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/relaykit/responsesrelay/relay"
	"github.com/relaykit/responsesrelay/scheduler"
)

// tailUpstream answers every stream with a response.created and a
// response.completed event, then keeps its handler (and so the end of the
// chunked body, which net/http writes when the handler returns) until the
// test sends on release (a release sent while no handler waits is taken by
// the next). It counts the connections it accepted.
type tailUpstream struct {
	srv     *httptest.Server
	release chan struct{}
	conns   atomic.Int64
}

func newTailUpstream(t *testing.T) *tailUpstream {
	// Buffered: a send never waits for a handler that has already
	// returned (the relay cut its request).
	u := &tailUpstream{release: make(chan struct{}, 8)}
	u.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		for i, ev := range []string{
			`{"type":"response.created","sequence_number":0,"response":{"id":"resp_tail","object":"response","status":"in_progress","model":"gpt-test","output":[]}}`,
			`{"type":"response.completed","sequence_number":1,"response":{"id":"resp_tail","object":"response","status":"completed","model":"gpt-test","output":[],"usage":{"input_tokens":3,"output_tokens":2,"total_tokens":5}}}`,
		} {
			fmt.Fprintf(w, "event: %s\ndata: %s\n\n", []string{"response.created", "response.completed"}[i], ev)
			w.(http.Flusher).Flush()
		}
		select {
		case <-u.release:
		case <-r.Context().Done():
		}
	}))
	u.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			u.conns.Add(1)
		}
	}
	u.srv.Start()
	t.Cleanup(u.srv.Close)
	return u
}

// streamUntilCompleted sends a streaming turn and reads it up to its
// response.completed event; the caller reads the rest.
func streamUntilCompleted(t *testing.T, e *env) (*http.Response, *bufio.Reader) {
	t.Helper()
	resp := e.streamOpen(context.Background(), streamReq)
	br := bufio.NewReader(resp.Body)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			resp.Body.Close()
			t.Fatalf("before response.completed: %v", err)
		}
		if strings.HasPrefix(line, "event: response.completed") {
			return resp, br
		}
	}
}

// TestUpstreamConnectionKeptAfterStream: the relay reads an upstream's
// body to its end after the terminal event (the end comes when the
// upstream's handler returns, here after the client has the terminal
// event), so one HTTP/1.1 connection serves every turn; before, a stream
// closed at its terminal event lost its connection whenever the end came
// later. Over the default transport (the relay's own HTTP/1.1 client for
// http:// upstreams) and over net/http's.
func TestUpstreamConnectionKeptAfterStream(t *testing.T) {
	for _, name := range []string{"default", "net/http"} {
		t.Run(name, func(t *testing.T) {
			up := newTailUpstream(t)
			e := newEnv(t)
			e.AddAccount(&scheduler.Account{ID: "a", BaseURL: up.srv.URL + "/v1"})
			if name == "net/http" {
				// One connection at most: a turn waits for the connection
				// the last one gives back instead of racing it with a
				// dial (net/http's read loop returns it), so a connection
				// is counted twice only when the relay lost it.
				tr := relay.NewTransport()
				tr.MaxConnsPerHost = 1
				e.h.Transport = tr
				t.Cleanup(tr.CloseIdleConnections)
			}
			for i := range 5 {
				resp, br := streamUntilCompleted(t, e)
				up.release <- struct{}{} // the upstream ends its body now
				if _, err := io.Copy(io.Discard, br); err != nil {
					t.Fatalf("turn %d: %v", i, err)
				}
				resp.Body.Close()
			}
			e.settle()
			if n := up.conns.Load(); n != 1 {
				t.Fatalf("%d upstream connections for 5 streams, want 1", n)
			}
			if got := len(e.sink.all()); got != 5 {
				t.Fatalf("%d usage records, want 5", got)
			}
		})
	}
}

// TestUpstreamOpenAfterTerminal: an upstream that keeps its body open
// after the terminal event does not keep the turn: the client's answer
// ends (within the relay's short wait for the body's end), the turn is
// recorded completed, and that connection is given up.
func TestUpstreamOpenAfterTerminal(t *testing.T) {
	up := newTailUpstream(t)
	e := newEnv(t)
	e.AddAccount(&scheduler.Account{ID: "a", BaseURL: up.srv.URL + "/v1"})
	for range 2 {
		resp, br := streamUntilCompleted(t, e) // release is never sent
		if _, err := io.Copy(io.Discard, br); err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	e.settle()
	recs := e.sink.all()
	if len(recs) != 2 || recs[0].Status != "completed" || recs[1].Status != "completed" || recs[1].OutputTokens != 2 {
		t.Fatalf("records %+v", recs)
	}
	if n := up.conns.Load(); n != 2 {
		t.Fatalf("%d upstream connections, want 2 (one given up per turn)", n)
	}
}
