package redisstore_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/relaykit/responsesrelay/examples/internal/redistest"
	"github.com/relaykit/responsesrelay/examples/redisstore"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// redisOptions returns the options of the test server (see
// redistest.URL), with ContextTimeoutEnabled as NewClient sets it.
func redisOptions(tb testing.TB) *redis.Options {
	tb.Helper()
	opts := redistest.Options(tb)
	opts.ContextTimeoutEnabled = true
	return opts
}

// newClient returns a client of the test server, closed at cleanup.
func newClient(tb testing.TB) *redis.Client {
	tb.Helper()
	c := redis.NewClient(redisOptions(tb))
	tb.Cleanup(func() { c.Close() })
	return c
}

// prefix returns a key prefix unique to the test; its keys are deleted at
// cleanup (registered after c, so it runs before c is closed).
func prefix(tb testing.TB, c *redis.Client) string {
	tb.Helper()
	var b [6]byte
	rand.Read(b[:])
	p := "relaytest:" + hex.EncodeToString(b[:]) + ":"
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		iter := c.Scan(ctx, 0, p+"*", 1000).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if err := iter.Err(); err != nil {
			tb.Errorf("cleaning up %s*: %v", p, err)
			return
		}
		if len(keys) > 0 {
			c.Del(ctx, keys...)
		}
	})
	return p
}

// newLimiter returns a Limiter closed at cleanup.
func newLimiter(tb testing.TB, c redis.UniversalClient, o *redisstore.LimiterOptions) *redisstore.Limiter {
	tb.Helper()
	l := redisstore.NewLimiter(c, o)
	tb.Cleanup(func() { l.Close() })
	return l
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// count reads a key's leases and queue from Redis.
func count(t *testing.T, l *redisstore.Limiter, key string) (held, queued int) {
	t.Helper()
	held, queued, err := l.Count(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	return held, queued
}

// logBuffer collects log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// unreachableClient is a client of addr that fails fast: one dial, no
// retries, and a pool large enough that go-redis never starts its
// background re-dial goroutine.
func unreachableClient(t *testing.T, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialerRetries: 1, PoolSize: 1000,
		DialTimeout: 500 * time.Millisecond, ContextTimeoutEnabled: true})
	t.Cleanup(func() { c.Close() })
	return c
}

// proxy forwards loopback connections to Redis and can simulate an outage:
// down cuts every connection and refuses new ones until up.
type proxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	down  bool
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, conns: make(map[net.Conn]struct{})}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.setDown(true)
		p.wg.Wait()
	})
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.forward(c)
	}
}

func (p *proxy) forward(c net.Conn) {
	defer p.wg.Done()
	defer func() {
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
		c.Close()
	}()
	u, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	p.mu.Lock()
	if p.down {
		p.mu.Unlock()
		u.Close()
		return
	}
	p.conns[u] = struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.conns, u)
		p.mu.Unlock()
		u.Close()
	}()
	done := make(chan struct{}, 2)
	go func() { io.Copy(u, c); u.Close(); done <- struct{}{} }()
	io.Copy(c, u)
	c.Close()
	<-done
}

func (p *proxy) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for c := range p.conns {
			c.Close()
		}
	}
}

// newClientWith returns a client with opts, closed at cleanup.
func newClientWith(tb testing.TB, opts *redis.Options) *redis.Client {
	tb.Helper()
	c := redis.NewClient(opts)
	tb.Cleanup(func() { c.Close() })
	return c
}
