package h1

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// server is an httptest server that counts the connections it accepted
// and has seen close.
type server struct {
	*httptest.Server
	opened, closed atomic.Int64
}

func newServer(t *testing.T, h http.HandlerFunc) *server {
	s := &server{}
	s.Server = httptest.NewUnstartedServer(h)
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			s.opened.Add(1)
		case http.StateClosed, http.StateHijacked:
			s.closed.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

// newTransport is a Transport whose Fallback fails every request: a test
// sees at once when a request went past Transport.
func newTransport(t *testing.T) *Transport {
	tr := &Transport{Fallback: failing{}}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

type failing struct{}

func (failing) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, errors.New("fallback used")
}

func post(t *testing.T, tr http.RoundTripper, ctx context.Context, u, body string) (*http.Response, error) {
	t.Helper()
	b := []byte(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	return tr.RoundTrip(req)
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("body: %v", err)
	}
	return string(b)
}

// waitFor polls cond until it holds, for at most 5 s: the server's
// ConnState hook runs on its own goroutine after the socket closes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	if !leakcheck.Settle(5*time.Second, cond) {
		t.Fatalf("timed out waiting for %s", what)
	}
}

func echo(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	w.Header().Set("X-Method", r.Method)
	fmt.Fprintf(w, "%s %s", r.URL.Path, b)
}

// TestReusesConnection: answers read to their end (sized, chunked, empty)
// give their connection back; the next request takes it.
func TestReusesConnection(t *testing.T) {
	leakcheck.Check(t)
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/chunked":
			w.Write([]byte("a"))
			w.(http.Flusher).Flush()
			w.Write([]byte("b"))
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		default:
			echo(w, r)
		}
	})
	tr := newTransport(t)
	for i, tc := range []struct{ path, want string }{
		{"/x", "/x hello"}, {"/chunked", "ab"}, {"/empty", ""}, {"/y", "/y hello"},
	} {
		resp, err := post(t, tr, context.Background(), s.URL+tc.path, "hello")
		if err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		if got := readAll(t, resp); got != tc.want {
			t.Fatalf("%s: body %q, want %q", tc.path, got, tc.want)
		}
	}
	if n := s.opened.Load(); n != 1 {
		t.Fatalf("%d connections for 4 requests, want 1", n)
	}
}

// TestCloseBeforeEndClosesConnection: a body closed before its end takes
// its connection with it (its rest would be read by the next answer).
func TestCloseBeforeEndClosesConnection(t *testing.T) {
	leakcheck.Check(t)
	release := make(chan struct{})
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("first"))
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	tr := newTransport(t)
	resp, err := post(t, tr, context.Background(), s.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "first" {
		t.Fatalf("read %q, %v", buf, err)
	}
	resp.Body.Close()
	waitFor(t, "the server to see the connection close", func() bool { return s.closed.Load() == 1 })
	if n, err := resp.Body.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("read after close: %d, %v", n, err)
	}
}

// TestContextEnds: a context that ends while the answer's head is awaited
// returns its error; one that ends mid-body makes the body's Read return
// it. Either way the connection is closed, not pooled.
func TestContextEnds(t *testing.T) {
	leakcheck.Check(t)
	headSent := make(chan struct{}, 1)
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/body" {
			w.Write([]byte("x"))
			w.(http.Flusher).Flush()
			headSent <- struct{}{}
		}
		<-r.Context().Done()
	})
	tr := newTransport(t)

	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		// The request is on its way once the server has it.
		waitFor(t, "the request", func() bool { return s.opened.Load() == 1 })
		cancel()
	}()
	if _, err := post(t, tr, ctx, s.URL+"/head", ""); !errors.Is(err, context.Canceled) {
		t.Fatalf("waiting for the head: %v, want context.Canceled", err)
	}

	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	resp, err := post(t, tr, ctx, s.URL+"/body", "")
	if err != nil {
		t.Fatal(err)
	}
	<-headSent
	buf := make([]byte, 8)
	if n, err := resp.Body.Read(buf); n != 1 || err != nil {
		t.Fatalf("first read: %d, %v", n, err)
	}
	cancel()
	if _, err := io.ReadAll(resp.Body); !errors.Is(err, context.Canceled) {
		t.Fatalf("mid-body: %v, want context.Canceled", err)
	}
	resp.Body.Close()
	waitFor(t, "both connections closed", func() bool { return s.closed.Load() == 2 })
	if len(tr.idle) != 0 {
		t.Fatalf("%d hosts with idle connections, want none", len(tr.idle))
	}
}

// rawServer accepts connections and hands each to serve in turn, so a
// test can write answers net/http's server would not.
type rawServer struct {
	ln       net.Listener
	accepted atomic.Int64
	wg       sync.WaitGroup
}

func newRawServer(t *testing.T, serve func(n int, c net.Conn, br *bufio.Reader)) *rawServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rawServer{ln: ln}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n := int(s.accepted.Add(1))
			s.wg.Go(func() {
				defer c.Close()
				serve(n, c, bufio.NewReader(c))
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		s.wg.Wait()
	})
	return s
}

func (s *rawServer) url() string { return "http://" + s.ln.Addr().String() }

// readRequest reads one request and its body: nil when the client has
// closed the connection, and a test failure for anything else.
func readRequest(t *testing.T, br *bufio.Reader) *http.Request {
	req, err := http.ReadRequest(br)
	if err != nil {
		if err != io.EOF && !errors.Is(err, net.ErrClosed) {
			t.Errorf("server: %v", err)
		}
		return nil
	}
	io.Copy(io.Discard, req.Body)
	return req
}

const okAnswer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

// TestStalePooledConnection: a pooled connection the upstream closed
// while it was idle is not used: the next request goes on a new one and
// succeeds.
func TestStalePooledConnection(t *testing.T) {
	leakcheck.Check(t)
	closed := make(chan struct{})
	s := newRawServer(t, func(n int, c net.Conn, br *bufio.Reader) {
		for readRequest(t, br) != nil {
			io.WriteString(c, okAnswer)
			if n == 1 {
				c.Close() // after one answer, as an idle timeout would
				close(closed)
				return
			}
		}
	})
	tr := newTransport(t)
	for i := range 2 {
		resp, err := post(t, tr, context.Background(), s.url(), "q")
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if got := readAll(t, resp); got != "ok" {
			t.Fatalf("request %d: %q", i, got)
		}
		if i == 0 {
			<-closed
		}
	}
	if n := s.accepted.Load(); n != 2 {
		t.Fatalf("%d connections, want 2", n)
	}
}

// TestNoSecondPOST: a POST that reached the upstream on a pooled
// connection, which then dropped it before answering, fails: it may have
// been served, and is not sent twice. A GET in the same place is sent
// again on a new connection.
func TestNoSecondPOST(t *testing.T) {
	leakcheck.Check(t)
	var requests atomic.Int64
	s := newRawServer(t, func(n int, c net.Conn, br *bufio.Reader) {
		// The first connection answers once, then drops the next request
		// unanswered; the later ones answer.
		for i := 0; ; i++ {
			if readRequest(t, br) == nil {
				return
			}
			requests.Add(1)
			if n == 1 && i == 1 {
				return
			}
			io.WriteString(c, okAnswer)
		}
	})
	for _, method := range []string{http.MethodPost, http.MethodGet} {
		t.Run(method, func(t *testing.T) {
			requests.Store(0)
			s.accepted.Store(0)
			tr := newTransport(t)
			do := func() (*http.Response, error) {
				req, _ := http.NewRequest(method, s.url(), nil)
				if method == http.MethodPost {
					req, _ = http.NewRequest(method, s.url(), strings.NewReader("{}"))
					req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader("{}")), nil }
				}
				return tr.RoundTrip(req)
			}
			resp, err := do()
			if err != nil {
				t.Fatal(err)
			}
			readAll(t, resp)
			resp, err = do()
			if method == http.MethodPost {
				if err == nil {
					t.Fatalf("POST dropped unanswered: status %d, want an error", resp.StatusCode)
				}
				if n := requests.Load(); n != 2 {
					t.Fatalf("upstream saw %d requests, want 2", n)
				}
				return
			}
			if err != nil {
				t.Fatalf("GET: %v", err)
			}
			readAll(t, resp)
			if n := requests.Load(); n != 3 {
				t.Fatalf("upstream saw %d requests, want 3 (one sent again)", n)
			}
		})
		s.accepted.Store(0)
	}
}

// TestHostileAnswers: what an upstream can send that must not bloat or
// wedge the caller: an endless head, endless informational answers, an
// unasked protocol switch, a broken chunk, a reset mid-body. Each fails
// the request or the body's read and closes its connection.
func TestHostileAnswers(t *testing.T) {
	leakcheck.Check(t)
	endless := strings.Repeat("X-Pad: "+strings.Repeat("a", 1000)+"\r\n", 2000) // 2 MB of headers
	cases := []struct {
		name, answer string
		bodyErr      bool // the head is fine; reading the body fails
	}{
		{"head too large", "HTTP/1.1 200 OK\r\n" + endless + "\r\n", false},
		{"informational answers without end", strings.Repeat("HTTP/1.1 103 Early Hints\r\n\r\n", 10), false},
		{"unasked switch", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n", false},
		{"not HTTP", "SSH-2.0-OpenSSH\r\n\r\n", false},
		{"broken chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n", true},
		{"reset mid-body", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newRawServer(t, func(_ int, c net.Conn, br *bufio.Reader) {
				if readRequest(t, br) != nil {
					io.WriteString(c, tc.answer)
				}
			})
			tr := newTransport(t)
			tr.MaxHeaderBytes = 64 << 10
			resp, err := post(t, tr, context.Background(), s.url(), "{}")
			if !tc.bodyErr {
				if err == nil {
					t.Fatalf("status %d, want an error", resp.StatusCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadAll(resp.Body); err == nil {
				t.Fatal("body read to its end, want an error")
			}
			resp.Body.Close()
			if len(tr.idle) != 0 {
				t.Fatal("a broken connection was pooled")
			}
		})
	}
}

// TestInformationalAnswers: 1xx answers before the final one are skipped.
func TestInformationalAnswers(t *testing.T) {
	leakcheck.Check(t)
	s := newRawServer(t, func(_ int, c net.Conn, br *bufio.Reader) {
		if readRequest(t, br) != nil {
			io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"+okAnswer)
		}
	})
	tr := newTransport(t)
	resp, err := post(t, tr, context.Background(), s.url(), "{}")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || readAll(t, resp) != "ok" {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

// TestConnectionClose: an answer that says it closes its connection, or
// has no length and ends with it, is read to its end and not pooled.
func TestConnectionClose(t *testing.T) {
	leakcheck.Check(t)
	for _, answer := range []string{
		"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.0 200 OK\r\n\r\nok",
	} {
		s := newRawServer(t, func(_ int, c net.Conn, br *bufio.Reader) {
			if readRequest(t, br) != nil {
				io.WriteString(c, answer)
			}
		})
		tr := newTransport(t)
		resp, err := post(t, tr, context.Background(), s.url(), "{}")
		if err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, resp); got != "ok" {
			t.Fatalf("%q: body %q", answer, got)
		}
		if len(tr.idle) != 0 {
			t.Fatalf("%q: connection pooled", answer)
		}
	}
}

// TestFallback: https, and a request a proxy would carry, go to Fallback.
func TestFallback(t *testing.T) {
	tr := newTransport(t)
	for _, u := range []string{"https://example.invalid/v1", "ws://example.invalid/"} {
		if _, err := post(t, tr, context.Background(), u, ""); err == nil || err.Error() != "fallback used" {
			t.Fatalf("%s: %v, want the fallback", u, err)
		}
	}
	proxy, _ := url.Parse("http://proxy.invalid:3128")
	tr.Proxy = http.ProxyURL(proxy)
	if _, err := post(t, tr, context.Background(), "http://example.invalid/v1", ""); err == nil || err.Error() != "fallback used" {
		t.Fatalf("through a proxy: %v, want the fallback", err)
	}
}

// TestIdleLimits: no more than MaxIdlePerHost connections wait per host,
// and none past IdleTimeout is used again.
func TestIdleLimits(t *testing.T) {
	leakcheck.Check(t)
	hold := make(chan struct{})
	var waiting sync.WaitGroup
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			waiting.Done()
			<-hold
		}
		w.Write([]byte("ok"))
	})
	tr := newTransport(t)
	tr.MaxIdlePerHost = 2
	// Three at once: three connections; two are kept.
	waiting.Add(3)
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			resp, err := post(t, tr, context.Background(), s.URL+"/hold", "")
			if err != nil {
				t.Error(err)
				return
			}
			readAll(t, resp)
		})
	}
	waiting.Wait()
	close(hold)
	wg.Wait()
	if n := len(tr.idle[s.Listener.Addr().String()]); n != 2 {
		t.Fatalf("%d idle connections, want 2", n)
	}
	waitFor(t, "the third connection closed", func() bool { return s.closed.Load() == 1 })

	// Past IdleTimeout: a new connection.
	tr.IdleTimeout = time.Nanosecond
	resp, err := post(t, tr, context.Background(), s.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if n := s.opened.Load(); n != 4 {
		t.Fatalf("%d connections opened, want 4", n)
	}
	tr.sweepIdle()
	if len(tr.idle) != 0 {
		t.Fatalf("sweep left %d hosts with idle connections", len(tr.idle))
	}
	waitFor(t, "the expired connections closed", func() bool { return s.closed.Load() == 4 })
}

// TestConcurrent: many goroutines share the pool; every answer is its own
// request's, and no more connections open than requests run at once.
func TestConcurrent(t *testing.T) {
	leakcheck.Check(t)
	s := newServer(t, echo)
	tr := newTransport(t)
	const workers, each = 8, 50
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				body := fmt.Sprintf("%d-%d", w, i)
				resp, err := post(t, tr, context.Background(), s.URL+"/c", body)
				if err != nil {
					t.Error(err)
					return
				}
				if got := readAll(t, resp); got != "/c "+body {
					t.Errorf("got %q for %q", got, body)
				}
			}
		})
	}
	wg.Wait()
	if n := s.opened.Load(); n > workers {
		t.Fatalf("%d connections for %d workers", n, workers)
	}
}

// TestDialFails: a refused dial is the request's error.
func TestDialFails(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	tr := newTransport(t)
	if _, err := post(t, tr, context.Background(), "http://"+addr, "{}"); err == nil {
		t.Fatal("dial to a closed port succeeded")
	}
}
