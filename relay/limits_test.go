package relay_test

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/concurrency"
	"github.com/relaykit/responsesrelay/scheduler"
)

// busyUser makes the user's only slot busy (a request held upstream) and
// returns the release of that request and its answer.
func busyUser(e *env) (func(), <-chan result) {
	e.subj.Concurrency = 1
	return e.holdOne()
}

// TestLimitBodyTakesNoSlot: oversized, undecodable and compressed-bomb
// bodies are refused at once, even while the user's one slot is busy:
// they never wait for, or take, a slot.
func TestLimitBodyTakesNoSlot(t *testing.T) {
	e := newEnv(t, "a")
	e.h.MaxBodyBytes = 64 << 10
	release, first := busyUser(e)
	defer func() { release(); <-first }()

	var bomb bytes.Buffer
	zw := gzip.NewWriter(&bomb)
	zw.Write([]byte(`{"model":"m","input":"`))
	zw.Write(bytes.Repeat([]byte("x"), 1<<20))
	zw.Write([]byte(`"}`))
	zw.Close()
	if bomb.Len() > 64<<10 {
		t.Fatalf("the compressed body is %d bytes; it must fit the limit to test decoding", bomb.Len())
	}
	cases := []struct {
		name   string
		body   io.Reader
		enc    string
		status int
	}{
		{"over the limit", strings.NewReader(`{"model":"m","input":"` + strings.Repeat("x", 70<<10) + `"}`), "", 413},
		{"gzip bomb", &bomb, "gzip", 413},
		{"broken gzip", strings.NewReader("not gzip"), "gzip", 400},
		{"unknown encoding", strings.NewReader(textReq), "br", 415},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/responses", c.body)
			req.Header.Set("Authorization", "Bearer rk-client")
			if c.enc != "" {
				req.Header.Set("Content-Encoding", c.enc)
			}
			resp, err := e.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, c.status, b)
			}
			apiErr(t, b)
			if n := e.lim.InFlight("user:" + "u1"); n != 1 {
				t.Fatalf("user slots %d while one turn is held", n)
			}
		})
	}
	if n := len(e.up.Requests()); n != 1 {
		t.Fatalf("%d upstream requests", n)
	}
}

// TestLimitAccountQueue: with every account full, the bounded account wait
// queue answers 429 when full and when its wait times out; neither takes a
// slot or reaches the upstream.
func TestLimitAccountQueue(t *testing.T) {
	e := newEnv(t)
	lim := concurrency.NewMemory()
	e.sched.Limiter = lim
	e.sched.AccountWait = concurrency.WaitOptions{MaxWaiters: 1, Timeout: 10 * time.Second}
	e.addAccount(&scheduler.Account{ID: "a", Concurrency: 1})
	release, first := e.holdOne()
	second := make(chan result, 1)
	go func() { second <- e.do(textReq) }()
	waitUntil(t, "a waiter", func() bool { return lim.Waiting("account:a") == 1 })

	r := e.do(textReq)
	if r.status != 429 || r.header.Get("Retry-After") == "" {
		t.Fatalf("queue full: status %d", r.status)
	}
	if typ, msg, _, _ := apiErr(t, r.body); typ != "rate_limit_error" || !strings.Contains(msg, "busy") {
		t.Fatalf("queue full: %q %q", typ, msg)
	}
	if n := schedInFlight(e.sched, "a"); n != 1 {
		t.Fatalf("account slots %d", n)
	}
	release()
	if r := <-first; r.status != 200 {
		t.Fatalf("first %d", r.status)
	}
	if r := <-second; r.status != 200 {
		t.Fatalf("queued %d", r.status)
	}

	if n := len(e.up.Requests()); n != 2 || len(e.sink.all()) != 2 {
		t.Fatalf("%d upstream requests, %d records", n, len(e.sink.all()))
	}
}

func TestLimitAccountWaitTimeout(t *testing.T) {
	e := newEnv(t)
	e.sched.AccountWait = concurrency.WaitOptions{Timeout: 30 * time.Millisecond}
	e.addAccount(&scheduler.Account{ID: "a", Concurrency: 1})
	release, first := e.holdOne()
	r := e.do(streamReq)
	if n := schedInFlight(e.sched, "a"); n != 1 {
		t.Fatalf("account slots %d", n)
	}
	release()
	<-first
	if r.status != 429 || r.header.Get("Retry-After") == "" {
		t.Fatalf("status %d", r.status)
	}
	if _, msg, _, _ := apiErr(t, r.body); !strings.Contains(msg, "Timed out waiting for an upstream account") {
		t.Fatalf("message %q", msg)
	}
	if n := len(e.up.Requests()); n != 1 || len(e.sink.all()) != 1 {
		t.Fatalf("%d upstream requests, %d records", n, len(e.sink.all()))
	}
}

// TestLimitUserQueueTakesNoSlot: a refused waiter leaves the user's slot
// count where the running turns put it.
func TestLimitUserQueueTakesNoSlot(t *testing.T) {
	e := newEnv(t, "a")
	e.h.UserWait = concurrency.WaitOptions{MaxWaiters: -1}
	release, first := busyUser(e)
	r := e.do(streamReq)
	if r.status != 429 || e.lim.InFlight("user:"+"u1") != 1 || e.lim.Waiting("user:"+"u1") != 0 {
		t.Fatalf("status %d, slots %d, waiting %d", r.status, e.lim.InFlight("user:"+"u1"), e.lim.Waiting("user:"+"u1"))
	}
	release()
	<-first
}
