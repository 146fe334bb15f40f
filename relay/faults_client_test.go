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
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/concurrency"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/relaykit/responsesrelay/scheduler"
)

// streamOpen sends a streaming request on a context the test cancels and
// returns the open response.
func (e *env) streamOpen(ctx context.Context, body string) *http.Response {
	e.t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.srv.URL+"/v1/responses", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer rk-client")
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp
}

// leaveMidStream opens a streaming turn of body on account, reads its
// first six events and leaves; once the relay has seen the client go, the
// upstream finishes the stream (which the relay drains). It returns the
// six events' types.
func (e *env) leaveMidStream(account, body string) []string {
	e.t.Helper()
	gone := e.gone.Load() + 1
	resume := make(chan struct{})
	e.up.Script(account, relaytest.Step{After: 6, Hold: resume})
	ctx, cancel := context.WithCancel(context.Background())
	resp := e.streamOpen(ctx, body)
	got := readEventTypes(e.t, bufio.NewReader(resp.Body), 6, "")
	cancel()
	resp.Body.Close()
	e.waitGone(gone)
	close(resume)
	return got
}

// readEventTypes reads SSE events from br until n have arrived or one of
// type until has.
func readEventTypes(t *testing.T, br *bufio.Reader, n int, until string) []string {
	t.Helper()
	var got []string
	for len(got) < n {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("after %v: %v", got, err)
		}
		if typ, ok := strings.CutPrefix(strings.TrimRight(line, "\n"), "event: "); ok {
			got = append(got, typ)
			if typ == until {
				break
			}
		}
	}
	return got
}

// TestFaultClientGoneWaitingForAccount: a client that leaves while its
// turn waits for an account slot leaves the queue; it never reaches the
// upstream and makes no record.
func TestFaultClientGoneWaitingForAccount(t *testing.T) {
	e := newEnv(t)
	lim := concurrency.NewMemory()
	e.sched.Limiter = lim
	e.addAccount(&scheduler.Account{ID: "a", Concurrency: 1})
	release, first := e.holdOne()
	cancel, done := e.abandonable(streamReq)
	waitUntil(t, "a waiter for the account", func() bool { return lim.Waiting("account:a") == 1 })
	cancel()
	<-done
	waitUntil(t, "the account queue to empty", func() bool { return lim.Waiting("account:a") == 0 })
	release()
	if r := <-first; r.status != 200 {
		t.Fatalf("first: %d", r.status)
	}
	if n := len(e.up.Requests()); n != 1 {
		t.Fatalf("%d upstream requests", n)
	}
	if recs := e.sink.all(); len(recs) != 1 || recs[0].Status != billing.StatusCompleted {
		t.Fatalf("records %+v", recs)
	}
}

// TestFaultClientGoneBeforeHeadersDrained: the client leaves while a
// non-streaming upstream is still thinking; the relay waits for the answer
// (DrainTimeout) and records it as client_gone with its usage.
func TestFaultClientGoneBeforeHeadersDrained(t *testing.T) {
	e := newEnv(t, "a")
	hold := make(chan struct{})
	e.up.Script("a", relaytest.Step{Hold: hold})
	cancel, done := e.abandonable(textReq)
	e.WaitInFlight("a", 1)
	cancel()
	<-done
	e.waitGone(1)
	close(hold)
	waitUntil(t, "the usage record", func() bool { return len(e.sink.all()) == 1 })
	rec, served := e.sink.all()[0], e.up.Served()
	if rec.Status != billing.StatusClientGone || len(served) != 1 || served[0].Status != "completed" {
		t.Fatalf("record %+v, served %+v", rec, served)
	}
	checkUsage(t, rec, served[0].Usage)
}

// TestFaultClientGoneMidStream: the client leaves after some events; the
// relay stops writing, drains the rest of the upstream's stream and records
// the full usage as client_gone.
func TestFaultClientGoneMidStream(t *testing.T) {
	e := newEnv(t, "a")
	got := e.leaveMidStream("a", streamReq)
	if got[5] != "response.output_text.delta" {
		t.Fatalf("events %v", got)
	}
	waitUntil(t, "the usage record", func() bool { return len(e.sink.all()) == 1 })
	rec, served := e.sink.all()[0], e.up.Served()
	if rec.Status != billing.StatusClientGone || served[0].Status != "completed" {
		t.Fatalf("record %+v, served %+v", rec, served[0])
	}
	checkUsage(t, rec, served[0].Usage)
}

// TestFaultClientGoneAfterTerminal: a client that hangs up right after
// reading the terminal event got its whole answer: completed, not
// client_gone.
func TestFaultClientGoneAfterTerminal(t *testing.T) {
	e := newEnv(t, "a")
	for i := 0; i < 5; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		resp := e.streamOpen(ctx, streamReq)
		got := readEventTypes(t, bufio.NewReader(resp.Body), 100, "response.completed")
		cancel()
		resp.Body.Close()
		if got[len(got)-1] != "response.completed" {
			t.Fatalf("events %v", got)
		}
	}
	ctx, stop := context.WithTimeout(context.Background(), 5*time.Second)
	defer stop()
	if err := e.h.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for _, rec := range e.sink.all() {
		if rec.Status != billing.StatusCompleted {
			t.Fatalf("record %+v", rec)
		}
	}
	if n := len(e.sink.all()); n != 5 {
		t.Fatalf("%d records", n)
	}
}

// rawRequest writes an HTTP/1.1 request head for body to the relay over a
// raw connection, so that the test controls when body bytes go out.
func (e *env) rawRequest(body string) net.Conn {
	e.t.Helper()
	c, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "POST /v1/responses HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer rk-client\r\n"+
		"Content-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", len(body))
	return c
}

// TestFaultSlowBody: a client that sends its body in small pieces with
// pauses is still served.
func TestFaultSlowBody(t *testing.T) {
	e := newEnv(t, "a")
	c := e.rawRequest(streamReq)
	for i := 0; i < len(streamReq); i += 7 {
		if _, err := io.WriteString(c, streamReq[i:min(i+7, len(streamReq))]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond) // the trickle itself, not synchronization
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := relaytest.ReadSSE(resp.Body)
	if resp.StatusCode != 200 || err != nil || len(evs) == 0 || evs[len(evs)-1].Type != "response.completed" {
		t.Fatalf("status %d, %d events, %v", resp.StatusCode, len(evs), err)
	}
	waitUntil(t, "the usage record", func() bool { return len(e.sink.all()) == 1 })
}

// TestFaultBodyStalledThenGone: a client that stops mid-body and then
// disconnects is dropped before any slot or upstream contact.
func TestFaultBodyStalledThenGone(t *testing.T) {
	e := newEnv(t, "a")
	e.subj.Concurrency = 1
	c := e.rawRequest(streamReq)
	io.WriteString(c, streamReq[:len(streamReq)/2])
	waitUntil(t, "the relay to read the body", func() bool { return e.h.Active() == 1 })
	if n := e.lim.InFlight("user:" + "u1"); n != 0 {
		t.Fatalf("a slot is held while the body is read: %d", n)
	}
	c.Close()
	waitUntil(t, "the turn to end", func() bool { return e.h.Active() == 0 })
	if n := len(e.up.Requests()); n != 0 || len(e.sink.all()) != 0 {
		t.Fatalf("%d upstream requests, %d records", n, len(e.sink.all()))
	}
	// The user's one slot is free for the next turn.
	if r := e.do(textReq); r.status != 200 {
		t.Fatalf("next turn: %d", r.status)
	}
}

// TestFaultClientStopsReading: a client that keeps its connection open but
// reads nothing cannot hold the turn: once a write to it blocks for
// ClientWriteTimeout it counts as gone, the upstream is drained and the
// slots come back.
func TestFaultClientStopsReading(t *testing.T) {
	e := newEnv(t, "a")
	e.subj.Concurrency = 1
	e.h.ClientWriteTimeout = 100 * time.Millisecond
	// 32 events of 1 MiB: far more than the socket buffers hold.
	e.up.Script("a", relaytest.Step{Deltas: 32, EventPadding: 1 << 20})
	c := e.rawRequest(streamReq)
	io.WriteString(c, streamReq)
	waitUntil(t, "the usage record", func() bool { return len(e.sink.all()) == 1 })
	rec, served := e.sink.all()[0], e.up.Served()
	if rec.Status != billing.StatusClientGone || served[0].Status != "completed" {
		t.Fatalf("record %+v, served %+v", rec, served[0])
	}
	checkUsage(t, rec, served[0].Usage)
	waitUntil(t, "the user slot", func() bool { return e.lim.InFlight("user:"+"u1") == 0 })
}

// TestServerTimeoutsDoNotCutAnswers: a server-wide WriteTimeout and
// ReadTimeout shorter than a turn do not cut the relay's answers: the
// relay keeps its own write deadline (ClientWriteTimeout) ahead of every
// write, and net/http applies ReadTimeout to reading the request only.
func TestServerTimeoutsDoNotCutAnswers(t *testing.T) {
	e := newEnv(t, "a")
	srv := httptest.NewUnstartedServer(http.HandlerFunc(e.serve))
	srv.Config.WriteTimeout = 50 * time.Millisecond
	srv.Config.ReadTimeout = 50 * time.Millisecond
	srv.Start()
	defer srv.Close()
	e.h.KeepAlive = 20 * time.Millisecond
	for _, body := range []string{streamReq, textReq} {
		e.up.Script("a", relaytest.Step{FirstTokenDelay: 150 * time.Millisecond})
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/responses", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer rk-client")
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("status %d, %v", resp.StatusCode, err)
		}
		if body == streamReq && !strings.Contains(string(b), "event: response.completed") {
			t.Fatalf("stream cut: %s", b)
		}
	}
	srv.Client().CloseIdleConnections()
	if recs := e.sink.all(); len(recs) != 2 || recs[0].Status != billing.StatusCompleted || recs[1].Status != billing.StatusCompleted {
		t.Fatalf("records %+v", recs)
	}
}
