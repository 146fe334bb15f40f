package wsconn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/relaykit/responsesrelay/internal/leakcheck"
)

// wait bounds how long a test waits for something that should happen at
// once; reaching it is a failure, not a synchronization.
const wait = 10 * time.Second

// serve starts an httptest server whose handler accepts a WebSocket with
// coder/websocket and runs h on it. The server and the client's idle
// connections are closed when the test ends.
func serve(t *testing.T, h func(ctx context.Context, c *websocket.Conn, r *http.Request)) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(acceptHandler(t, h))
	t.Cleanup(srv.Close)
	return srv
}

func acceptHandler(t *testing.T, h func(ctx context.Context, c *websocket.Conn, r *http.Request)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			t.Errorf("server: Accept: %v", err)
			return
		}
		defer c.CloseNow()
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		h(ctx, c, r)
	}
}

// echo sends back every message until the connection ends.
func echo(ctx context.Context, c *websocket.Conn, _ *http.Request) {
	c.SetReadLimit(4 << 20)
	for {
		typ, p, err := c.Read(ctx)
		if err != nil {
			return
		}
		if err := c.Write(ctx, typ, p); err != nil {
			return
		}
	}
}

func dial(t *testing.T, srv *httptest.Server, header http.Header) *Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	c, err := Dial(ctx, srv.Client(), srv.URL, header)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(wait):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func TestDialEcho(t *testing.T) {
	leakcheck.Check(t)
	srv := serve(t, echo)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	// ws:// is dialed as http://.
	c, err := Dial(ctx, srv.Client(), "ws://"+strings.TrimPrefix(srv.URL, "http://"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	c.SetReadLimit(2 << 20)
	for _, n := range []int{0, 1, 125, 126, 65535, 65536, 1 << 20} {
		p := payload(n)
		if err := c.WriteText(ctx, p); err != nil {
			t.Fatalf("WriteText(%d bytes): %v", n, err)
		}
		msg, err := c.Read()
		if err != nil {
			t.Fatalf("Read of %d bytes: %v", n, err)
		}
		if !bytes.Equal(msg, p) {
			t.Fatalf("echo of %d bytes came back as %d different bytes", n, len(msg))
		}
	}
}

func TestDialTLS(t *testing.T) {
	leakcheck.Check(t)
	srv := httptest.NewTLSServer(acceptHandler(t, echo))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	c, err := Dial(ctx, srv.Client(), "wss://"+strings.TrimPrefix(srv.URL, "https://"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if err := c.WriteText(ctx, []byte("over TLS")); err != nil {
		t.Fatal(err)
	}
	if msg, err := c.Read(); err != nil || string(msg) != "over TLS" {
		t.Fatalf("Read = %q, %v", msg, err)
	}
}

func TestDialSendsHeaders(t *testing.T) {
	leakcheck.Check(t)
	got := make(chan http.Header, 1)
	srv := serve(t, func(ctx context.Context, c *websocket.Conn, r *http.Request) {
		got <- r.Header.Clone()
		echo(ctx, c, r)
	})
	h := http.Header{}
	h.Set("Authorization", "Bearer secret")
	h.Add("X-Trace", "a")
	h.Add("X-Trace", "b")
	h.Set("User-Agent", "relay-test/1")
	c := dial(t, srv, h)
	sent := recv(t, got, "the server's view of the handshake")
	for k, want := range map[string]string{
		"Authorization":         "Bearer secret",
		"User-Agent":            "relay-test/1",
		"Upgrade":               "websocket",
		"Sec-Websocket-Version": "13",
	} {
		if v := sent.Get(k); v != want {
			t.Errorf("server got %s %q, want %q", k, v, want)
		}
	}
	if v := sent.Values("X-Trace"); len(v) != 2 || v[0] != "a" || v[1] != "b" {
		t.Errorf("server got X-Trace %q, want [a b]", v)
	}
	if len(sent.Get("Sec-Websocket-Key")) != 24 {
		t.Errorf("Sec-WebSocket-Key %q is not 16 bytes in base64", sent.Get("Sec-Websocket-Key"))
	}
	if sent.Get("Sec-Websocket-Extensions") != "" {
		t.Errorf("client offered extensions %q", sent.Get("Sec-Websocket-Extensions"))
	}
	if h.Get("Upgrade") != "" {
		t.Error("Dial changed the caller's header")
	}
	// The connection works.
	if err := c.WriteText(context.Background(), []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if msg, err := c.Read(); err != nil || string(msg) != "hi" {
		t.Fatalf("Read = %q, %v", msg, err)
	}
}

func TestFragmentedServerMessage(t *testing.T) {
	leakcheck.Check(t)
	big := payload(40 << 10)
	srv := serve(t, func(ctx context.Context, c *websocket.Conn, r *http.Request) {
		w, err := c.Writer(ctx, websocket.MessageText)
		if err != nil {
			return
		}
		for _, p := range [][]byte{[]byte("frag-1 "), []byte("frag-2 "), big, []byte(" end")} {
			if _, err := w.Write(p); err != nil {
				return
			}
		}
		if err := w.Close(); err != nil {
			return
		}
		if err := c.Write(ctx, websocket.MessageText, []byte("whole")); err != nil {
			return
		}
		c.Read(ctx) // until the client leaves
	})
	c := dial(t, srv, nil)
	want := cat([]byte("frag-1 frag-2 "), big, []byte(" end"))
	msg, err := c.Read()
	if err != nil || !bytes.Equal(msg, want) {
		t.Fatalf("Read = %d bytes, %v; want the %d bytes of all fragments", len(msg), err, len(want))
	}
	if msg, err := c.Read(); err != nil || string(msg) != "whole" {
		t.Fatalf("next Read = %q, %v", msg, err)
	}
}

func TestServerPingWhileReading(t *testing.T) {
	leakcheck.Check(t)
	pinged := make(chan error, 1)
	srv := serve(t, func(ctx context.Context, c *websocket.Conn, r *http.Request) {
		if _, _, err := c.Read(ctx); err != nil { // the client is reading after this
			pinged <- err
			return
		}
		readCtx := c.CloseRead(ctx) // reads the pongs
		var err error
		for range 3 {
			if err = c.Ping(ctx); err != nil {
				break
			}
		}
		pinged <- err
		if err == nil {
			c.Write(ctx, websocket.MessageText, []byte("after pings"))
		}
		<-readCtx.Done()
	})
	c := dial(t, srv, nil)
	if err := c.WriteText(context.Background(), []byte("go")); err != nil {
		t.Fatal(err)
	}
	msg, err := c.Read()
	if err != nil || string(msg) != "after pings" {
		t.Fatalf("Read = %q, %v", msg, err)
	}
	if err := recv(t, pinged, "the server's pings"); err != nil {
		t.Fatalf("server Ping: %v", err)
	}
}

func TestClientPing(t *testing.T) {
	leakcheck.Check(t)
	srv := serve(t, echo)
	c := dial(t, srv, nil)
	readErr := readInBackground(c)
	for i := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		err := c.Ping(ctx)
		cancel()
		if err != nil {
			t.Fatalf("Ping %d: %v", i, err)
		}
	}
	c.CloseNow()
	if err := recv(t, readErr, "Read to end"); err != ErrClosed {
		t.Fatalf("Read after CloseNow = %v, want ErrClosed", err)
	}
}

func TestServerClose(t *testing.T) {
	leakcheck.Check(t)
	closed := make(chan error, 1)
	srv := serve(t, func(ctx context.Context, c *websocket.Conn, r *http.Request) {
		if err := c.Write(ctx, websocket.MessageText, []byte("last")); err != nil {
			closed <- err
			return
		}
		// Close waits for the client's close frame and checks its code.
		closed <- c.Close(4001, "going away now")
	})
	c := dial(t, srv, nil)
	if msg, err := c.Read(); err != nil || string(msg) != "last" {
		t.Fatalf("Read = %q, %v", msg, err)
	}
	_, err := c.Read()
	var ce *CloseError
	if !errors.As(err, &ce) {
		t.Fatalf("Read = %v, want a *CloseError", err)
	}
	if ce.Code != 4001 || ce.Reason != "going away now" {
		t.Errorf("CloseError = %d %q, want 4001 %q", ce.Code, ce.Reason, "going away now")
	}
	if err := recv(t, closed, "the server's Close"); err != nil {
		t.Errorf("server Close: %v (the client's reply did not echo the code)", err)
	}
	select {
	case <-c.Closed():
	case <-time.After(wait):
		t.Fatal("connection not closed after the close frame")
	}
	if _, err2 := c.Read(); err2 != err {
		t.Errorf("next Read = %v, want the same *CloseError", err2)
	}
}

func TestReadLimitClosesWith1009(t *testing.T) {
	leakcheck.Check(t)
	status := make(chan websocket.StatusCode, 1)
	srv := serve(t, func(ctx context.Context, c *websocket.Conn, r *http.Request) {
		if err := c.Write(ctx, websocket.MessageText, payload(2048)); err != nil {
			status <- -2
			return
		}
		_, _, err := c.Read(ctx)
		status <- websocket.CloseStatus(err)
	})
	c := dial(t, srv, nil)
	c.SetReadLimit(1024)
	if msg, err := c.Read(); err != ErrTooBig {
		t.Fatalf("Read = %d bytes, %v; want ErrTooBig", len(msg), err)
	}
	if got := recv(t, status, "the server's close status"); got != websocket.StatusMessageTooBig {
		t.Errorf("server saw close status %d, want 1009", got)
	}
	if _, err := c.Read(); err != ErrTooBig {
		t.Errorf("next Read = %v, want ErrTooBig", err)
	}
}

func TestHandshakeError(t *testing.T) {
	leakcheck.Check(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Request-Id", "req-7")
		if r.URL.Path == "/big" {
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write(bytes.Repeat([]byte("x"), 100<<10))
			return
		}
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"error":{"message":"bad key"}}`)
	}))
	t.Cleanup(srv.Close)

	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	c, err := Dial(ctx, srv.Client(), srv.URL+"/v1/responses", nil)
	var he *HandshakeError
	if !errors.As(err, &he) {
		t.Fatalf("Dial = %v, %v; want a *HandshakeError", c, err)
	}
	if he.Status != 401 {
		t.Errorf("Status = %d, want 401", he.Status)
	}
	if he.Header.Get("X-Request-Id") != "req-7" || he.Header.Get("Content-Type") != "application/json" {
		t.Errorf("Header = %v", he.Header)
	}
	if string(he.Body) != `{"error":{"message":"bad key"}}` {
		t.Errorf("Body = %q", he.Body)
	}
	if !strings.Contains(he.Error(), "401") {
		t.Errorf("Error() = %q, want the status in it", he.Error())
	}

	_, err = Dial(ctx, srv.Client(), srv.URL+"/big", nil)
	if !errors.As(err, &he) || he.Status != 503 || len(he.Body) != 64<<10 {
		t.Fatalf("Dial = %v; want a 503 *HandshakeError with 64 KiB of body", err)
	}
}

// rawUpgrade answers the handshake by hand: a 101 with the given header
// lines, then reads until the client closes, which it reports.
func rawUpgrade(t *testing.T, lines func(key string) string) (*httptest.Server, <-chan error) {
	done := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Errorf("Hijack: %v", err)
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(wait))
		fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\n%s\r\n", lines(r.Header.Get("Sec-WebSocket-Key")))
		brw.Flush()
		_, err = io.Copy(io.Discard, brw)
		done <- err
	}))
	t.Cleanup(srv.Close)
	return srv, done
}

func TestDialBadUpgrade(t *testing.T) {
	good := func(key string) string {
		return "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + acceptKey(key) + "\r\n"
	}
	tests := []struct {
		name  string
		lines func(key string) string
		ok    bool
	}{
		{"valid", good, true},
		{"valid, tokens in lists and other case", func(key string) string {
			return "Upgrade: WebSocket\r\nConnection: keep-alive, upgrade\r\nSec-WebSocket-Accept: " + acceptKey(key) + "\r\n"
		}, true},
		{"wrong accept", func(key string) string {
			return "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + acceptKey(key+"x") + "\r\n"
		}, false},
		{"no accept", func(string) string { return "Upgrade: websocket\r\nConnection: Upgrade\r\n" }, false},
		{"no Upgrade", func(key string) string {
			return "Connection: Upgrade\r\nSec-WebSocket-Accept: " + acceptKey(key) + "\r\n"
		}, false},
		{"no Connection", func(key string) string {
			return "Upgrade: websocket\r\nSec-WebSocket-Accept: " + acceptKey(key) + "\r\n"
		}, false},
		{"extension not offered", func(key string) string { return good(key) + "Sec-WebSocket-Extensions: permessage-deflate\r\n" }, false},
		{"subprotocol not offered", func(key string) string { return good(key) + "Sec-WebSocket-Protocol: chat\r\n" }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leakcheck.Check(t)
			srv, done := rawUpgrade(t, tt.lines)
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			c, err := Dial(ctx, srv.Client(), srv.URL, nil)
			if tt.ok {
				if err != nil {
					t.Fatalf("Dial: %v", err)
				}
				c.CloseNow()
			} else {
				if err == nil {
					c.CloseNow()
					t.Fatal("Dial succeeded")
				}
				var he *HandshakeError
				if errors.As(err, &he) {
					t.Errorf("Dial = %v, a *HandshakeError for a 101", err)
				}
			}
			// Either way the client closed the connection.
			if err := recv(t, done, "the client to close the connection"); err != nil {
				t.Errorf("server read until %v, want EOF", err)
			}
		})
	}
}

func TestClientTimeoutAfterHandshake(t *testing.T) {
	leakcheck.Check(t)
	srv := serve(t, echo)
	client := *srv.Client()
	client.Timeout = 100 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	c, err := Dial(ctx, &client, srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if client.Timeout != 100*time.Millisecond {
		t.Errorf("Dial changed the caller's client: Timeout %v", client.Timeout)
	}
	// The subject: outlive the client's Timeout with the connection idle.
	time.Sleep(3 * client.Timeout)
	if err := c.WriteText(ctx, []byte("still here")); err != nil {
		t.Fatalf("WriteText after the client's Timeout: %v", err)
	}
	if msg, err := c.Read(); err != nil || string(msg) != "still here" {
		t.Fatalf("Read after the client's Timeout = %q, %v", msg, err)
	}
}

func TestClientTimeoutBoundsHandshake(t *testing.T) {
	leakcheck.Check(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // never answers
	}))
	t.Cleanup(srv.Close)
	client := *srv.Client()
	client.Timeout = 50 * time.Millisecond
	start := time.Now()
	_, err := Dial(context.Background(), &client, srv.URL, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Dial = %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > wait/2 {
		t.Errorf("Dial took %v with a 50ms Timeout", d)
	}
}

func TestDialContextBoundsHandshakeOnly(t *testing.T) {
	leakcheck.Check(t)
	srv := serve(t, echo)
	ctx, cancel := context.WithCancel(context.Background())
	c, err := Dial(ctx, srv.Client(), srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	cancel()
	if err := c.WriteText(context.Background(), []byte("after cancel")); err != nil {
		t.Fatal(err)
	}
	if msg, err := c.Read(); err != nil || string(msg) != "after cancel" {
		t.Fatalf("Read = %q, %v", msg, err)
	}
}

func TestCloseNowUnblocksDialedRead(t *testing.T) {
	leakcheck.Check(t)
	srv := serve(t, func(ctx context.Context, c *websocket.Conn, r *http.Request) {
		c.Read(ctx) // never sends
	})
	c := dial(t, srv, nil)
	// The upgraded response body, wrapped to see the Read block in it.
	rc := &readingConn{ReadWriteCloser: c.rwc, reading: make(chan struct{})}
	c.rwc = rc
	done := make(chan error, 1)
	go func() {
		_, err := c.Read()
		done <- err
	}()
	<-rc.reading
	select {
	case err := <-done:
		t.Fatalf("Read returned %v with nothing sent", err)
	default:
	}
	c.CloseNow()
	if err := recv(t, done, "Read to return"); err != ErrClosed {
		t.Fatalf("Read = %v, want ErrClosed", err)
	}
}
