package relay_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/relay"
	"github.com/relaykit/responsesrelay/relay/relaytest"
)

// gzipBomb is a request that inflates to just under limit bytes, a few KB
// on the wire.
func gzipBomb(t *testing.T, limit int) []byte {
	head, tail := `{"model":"m","input":"`, `"}`
	return gzipped(t, []byte(head+string(bytes.Repeat([]byte("x"), limit-len(head)-len(tail)-64))+tail))
}

// postGzip sends body gzip-encoded on ctx and returns the status and
// answer; err when the client side failed (its context ended).
func (e *env) postGzip(ctx context.Context, body []byte) (int, []byte, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.srv.URL+"/v1/responses", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer rk-client")
	req.Header.Set("Content-Encoding", "gzip")
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// TestBodyMemoryBoundedBeforeSlot: a user limited to 2 turns sends 16
// gzip bodies at once, each inflating to nearly MaxBodyBytes, while both
// its slots are busy. The bodies waiting for a slot never hold more than
// the per-user budget (4 × MaxBodyBytes), a client leaving while waiting
// for the budget leaves nothing held, and once the slots free up every
// request is served.
func TestBodyMemoryBoundedBeforeSlot(t *testing.T) {
	const limit = 4 << 20
	e := newEnv(t, "a")
	e.h.MaxBodyBytes = limit
	// Waiting bodies must outlast a loaded machine's slowest decode: the
	// test is about what they hold, not how long they wait.
	e.h.UserWait.Timeout = 10 * time.Minute
	e.subj.Concurrency = 2
	hold := make(chan struct{})
	e.up.Script("a", relaytest.Step{Hold: hold}, relaytest.Step{Hold: hold})
	var first sync.WaitGroup
	for range 2 {
		first.Go(func() { e.do(textReq) })
	}
	e.WaitInFlight("a", 2)

	bomb := gzipBomb(t, limit)
	reservation := int64(len(bomb)) + limit // compressed + decoded, before reading
	decoded := int64(limit - 64)            // kept once decoded
	const perUser = 4 * limit
	// Bodies that get budget while both slots are busy: each reserves its
	// worst case, then keeps its decoded size.
	var fit int64
	for fit*decoded+reservation <= perUser {
		fit++
	}
	if fit < 2 || fit >= 16 {
		t.Fatalf("%d bodies fit; the test wants some, not all", fit)
	}

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	baseline := ms.HeapAlloc

	ctx, cancel := context.WithCancel(context.Background())
	var sent sync.WaitGroup
	statuses := make(chan int, 16)
	for range 16 {
		sent.Go(func() {
			status, b, err := e.postGzip(context.Background(), bomb)
			if err != nil {
				t.Errorf("client: %v", err)
				return
			}
			if status != http.StatusOK {
				t.Errorf("status %d: %s", status, b)
			}
			statuses <- status
		})
	}
	waitUntil(t, "bodies to fill the per-user budget", func() bool {
		return relay.BodyMemoryHeld(e.h) == fit*decoded
	})
	// The live heap agrees with the budget's count: the bodies held plus
	// a little for sixteen connections, where without the budget all
	// sixteen decoded bodies (64 MiB) would be live.
	runtime.GC()
	runtime.ReadMemStats(&ms)
	if growth := int64(ms.HeapAlloc) - int64(baseline); growth > perUser+8<<20 {
		t.Fatalf("live heap grew by %d bytes with the bodies waiting; the bound is %d", growth, perUser+8<<20)
	}
	// Over HTTP/1.1 the server sees a client leave only once it has read
	// the body, so this one is noticed after it got its budget; the test
	// checks that it then gives everything back like the others.
	gaveUp := make(chan error, 1)
	go func() { _, _, err := e.postGzip(ctx, bomb); gaveUp <- err }()
	cancel()
	if err := <-gaveUp; err == nil {
		t.Fatal("the abandoned request was answered")
	}
	if held := relay.BodyMemoryHeld(e.h); held != fit*decoded {
		t.Fatalf("%d bytes held with the slots busy, want %d", held, fit*decoded)
	}

	close(hold)
	first.Wait()
	sent.Wait()
	close(statuses)
	if n := len(statuses); n != 16 {
		t.Fatalf("%d of 16 requests served", n)
	}
	if peak := relay.BodyMemoryPeak(e.h); peak > perUser {
		t.Fatalf("body memory peaked at %d bytes; the per-user bound is %d", peak, perUser)
	}
	waitUntil(t, "the budget to be given back", func() bool { return relay.BodyMemoryHeld(e.h) == 0 })
}

// TestBodyMemoryWaitTimesOut: a body that cannot get budget within the
// user wait timeout is refused 429 (the user's budget) or 503 (the
// relay's), OpenAI-shaped, and holds nothing afterwards.
func TestBodyMemoryWaitTimesOut(t *testing.T) {
	const limit = 1 << 20
	for _, c := range []struct {
		name   string
		set    func(h *relay.Handler)
		status int
	}{
		{"per user", func(h *relay.Handler) {}, http.StatusTooManyRequests},
		{"total", func(h *relay.Handler) { h.BodyMemoryPerUser = -1; h.BodyMemory = 2 * limit }, http.StatusServiceUnavailable},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, "a")
			e.h.MaxBodyBytes = limit
			e.h.UserWait.Timeout = 20 * time.Millisecond
			c.set(e.h)
			e.subj.Concurrency = 1
			hold := make(chan struct{})
			e.up.Script("a", relaytest.Step{Hold: hold})
			done := make(chan struct{})
			go func() { defer close(done); e.do(textReq) }()
			e.WaitInFlight("a", 1)
			defer func() { close(hold); <-done }()

			// The user wait also times out: 429 either way for bodies
			// that got budget; the one that did not gets the budget answer.
			bomb := gzipBomb(t, limit)
			var wg sync.WaitGroup
			got := make(chan int, 8)
			for range 8 {
				wg.Go(func() {
					status, b, err := e.postGzip(context.Background(), bomb)
					if err != nil {
						t.Error(err)
						return
					}
					apiErr(t, b)
					got <- status
				})
			}
			wg.Wait()
			close(got)
			seen := false
			for s := range got {
				seen = seen || s == c.status
				if s != http.StatusTooManyRequests && s != c.status {
					t.Errorf("status %d", s)
				}
			}
			if !seen {
				t.Fatalf("no request was refused %d", c.status)
			}
			if held := relay.BodyMemoryHeld(e.h); held != 0 {
				t.Fatalf("%d bytes held after every request was answered", held)
			}
		})
	}
}

// TestBodyMemoryClientGoneWhileWaiting: over HTTP/2 a client that resets
// its stream while its body waits for budget ends the wait at once: the
// relay sees it leave, holds nothing for it, and the body already
// reserved is served once the slot frees.
func TestBodyMemoryClientGoneWhileWaiting(t *testing.T) {
	const limit = 1 << 20
	e := newEnv(t, "a")
	e.h.MaxBodyBytes = limit
	bomb := gzipBomb(t, limit)
	decoded := int64(limit - 64)
	// Room for one gzip body kept whole, not for a second one's reservation.
	e.h.BodyMemoryPerUser = decoded + int64(len(bomb)) + limit - 1
	h2 := httptest.NewUnstartedServer(http.HandlerFunc(e.serve))
	h2.EnableHTTP2 = true
	h2.StartTLS()
	defer h2.Close()
	post := func(ctx context.Context) (int, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, h2.URL+"/v1/responses", bytes.NewReader(bomb))
		req.Header.Set("Authorization", "Bearer rk-client")
		req.Header.Set("Content-Encoding", "gzip")
		resp, err := h2.Client().Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		if resp.ProtoMajor != 2 {
			t.Errorf("served over HTTP/%d", resp.ProtoMajor)
		}
		return resp.StatusCode, nil
	}

	release, first := busyUser(e)
	kept := make(chan int, 1)
	go func() { s, _ := post(context.Background()); kept <- s }()
	waitUntil(t, "the first body to wait for the slot", func() bool { return relay.BodyMemoryHeld(e.h) == decoded })

	ctx, cancel := context.WithCancel(context.Background())
	gone := make(chan error, 1)
	go func() { _, err := post(ctx); gone <- err }()
	waitUntil(t, "the second body to wait for budget", func() bool { return relay.BodyMemoryWaiting(e.h) == 1 })
	cancel()
	if err := <-gone; err == nil {
		t.Fatal("the abandoned request was answered")
	}
	e.waitGone(1)
	waitUntil(t, "the wait to end", func() bool { return relay.BodyMemoryWaiting(e.h) == 0 })
	if held := relay.BodyMemoryHeld(e.h); held != decoded {
		t.Fatalf("%d bytes held, want the first body's %d", held, decoded)
	}
	release()
	<-first
	if s := <-kept; s != http.StatusOK {
		t.Fatalf("the reserved body was answered %d", s)
	}
	waitUntil(t, "the budget to be given back", func() bool { return relay.BodyMemoryHeld(e.h) == 0 })
	h2.Client().CloseIdleConnections()
}
