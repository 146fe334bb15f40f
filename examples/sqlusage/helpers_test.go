package sqlusage_test

import (
	"context"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/examples/internal/pgtest"
	"github.com/relaykit/responsesrelay/examples/sqlusage"
)

// postgresDSN is the URL of an empty schema of the test server, dropped
// at cleanup (see pgtest.DSN).
func postgresDSN(tb testing.TB) string {
	tb.Helper()
	return pgtest.DSN(tb, "sqlusage_test_")
}

// target is a fresh, empty database of one driver.
type target struct {
	driver, dsn string
}

func sqliteTarget(tb testing.TB) target {
	return target{sqlusage.DriverSQLite, filepath.Join(tb.TempDir(), "usage.db")}
}

func postgresTarget(tb testing.TB) target {
	return target{sqlusage.DriverPostgres, postgresDSN(tb)}
}

// open opens a Sink on the target, shut down at cleanup.
func (tg target) open(tb testing.TB, opts ...sqlusage.Option) *sqlusage.Sink {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := sqlusage.Open(ctx, tg.driver, tg.dsn, opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Error(err)
		}
	})
	return s
}

// eachDriver runs f once per driver, as subtests "sqlite" and "postgres".
func eachDriver(t *testing.T, f func(t *testing.T, tg target)) {
	t.Run("sqlite", func(t *testing.T) { f(t, sqliteTarget(t)) })
	t.Run("postgres", func(t *testing.T) { f(t, postgresTarget(t)) })
}

// queryInt runs a query returning one integer, written with $1-style
// placeholders, which SQLite also accepts.
func queryInt(t testing.TB, s *sqlusage.Sink, query string, args ...any) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var n int64
	var err error
	if s.Pool() != nil {
		err = s.Pool().QueryRow(ctx, query, args...).Scan(&n)
	} else {
		err = s.DB().QueryRowContext(ctx, query, args...).Scan(&n)
	}
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

func countRows(t testing.TB, s *sqlusage.Sink) int64 {
	t.Helper()
	return queryInt(t, s, `SELECT count(*) FROM usage_records`)
}

// proxy forwards TCP connections to a server until frozen: then it stops
// passing bytes either way, and new connections hang too, as with a
// server or network that stopped answering.
type proxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu     sync.Mutex
	conns  []net.Conn
	gate   chan struct{} // non-nil while frozen; closed to thaw
	closed chan struct{}
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, closed: make(chan struct{})}
	p.wg.Go(p.accept)
	t.Cleanup(p.close)
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		p.wg.Go(func() { p.pump(up, c) })
		p.wg.Go(func() { p.pump(c, up) })
	}
}

func (p *proxy) pump(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.waitThawed() {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// waitThawed blocks while frozen; false when the proxy closed meanwhile.
func (p *proxy) waitThawed() bool {
	p.mu.Lock()
	gate := p.gate
	p.mu.Unlock()
	if gate == nil {
		return true
	}
	select {
	case <-gate:
		return true
	case <-p.closed:
		return false
	}
}

func (p *proxy) freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gate == nil {
		p.gate = make(chan struct{})
	}
}

func (p *proxy) thaw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gate != nil {
		close(p.gate)
		p.gate = nil
	}
}

func (p *proxy) close() {
	close(p.closed)
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
