package sqlusage_test

import (
	"context"
	"net"
	"sync"
	"testing"

	"github.com/relaykit/responsesrelay/examples/internal/sqltest"
	"github.com/relaykit/responsesrelay/examples/sqlusage"
)

// postgresDSN is the URL of an empty schema of the test server, dropped
// at cleanup (see pgtest.DSN).
func postgresDSN(tb testing.TB) string {
	tb.Helper()
	return postgresTarget(tb).DSN
}

// target is a fresh, empty database of one driver.
type target sqltest.Target

func sqliteTarget(tb testing.TB) target { return target(sqltest.SQLite(tb, "usage.db")) }

func postgresTarget(tb testing.TB) target { return target(sqltest.Postgres(tb, "sqlusage_test_")) }

// open opens a Sink on the target, shut down at cleanup.
func (tg target) open(tb testing.TB, opts ...sqlusage.Option) *sqlusage.Sink {
	tb.Helper()
	return sqltest.Open(tb, func(ctx context.Context) (*sqlusage.Sink, error) {
		return sqlusage.Open(ctx, tg.Driver, tg.DSN, opts...)
	})
}

// eachDriver runs f once per driver, as subtests "sqlite" and "postgres".
func eachDriver(t *testing.T, f func(t *testing.T, tg target)) {
	sqltest.EachDriver(t, sqliteTarget, postgresTarget, f)
}

// queryInt runs a query returning one integer, written with $1-style
// placeholders, which SQLite also accepts.
func queryInt(t testing.TB, s *sqlusage.Sink, query string, args ...any) int64 {
	t.Helper()
	return sqltest.QueryInt(t, s.Pool(), s.DB(), query, args...)
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
