package relay_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/tidwall/gjson"
)

func TestStreamIdleTimeout(t *testing.T) {
	e := newEnv(t, "a")
	e.h.StreamIdleTimeout = 250 * time.Millisecond
	e.up.Script("a", relaytest.Step{After: 5, Hold: make(chan struct{})})
	r := e.do(streamReq)
	if r.lastType() != "response.failed" || countType(r, "response.failed") != 1 {
		t.Fatalf("events %v", r.types())
	}
	last := r.events[len(r.events)-1].Data
	if code := gjson.GetBytes(last, "response.error.code").String(); code != "stream_timeout" {
		t.Fatalf("code %q", code)
	}
	if seq := gjson.GetBytes(last, "sequence_number").Int(); seq != 5 {
		t.Fatalf("sequence_number %d, want 5", seq)
	}
	if recs := e.sink.all(); len(recs) != 1 || recs[0].Status != billing.StatusUpstreamError {
		t.Fatalf("records %+v", recs)
	}
}

func TestStreamEOFWithoutTerminal(t *testing.T) {
	e := newEnv(t, "a")
	e.up.Script("a", relaytest.Step{End: "none"})
	r := e.do(streamReq)
	if r.lastType() != "response.failed" || countType(r, "response.failed") != 1 || countType(r, "response.completed") != 0 {
		t.Fatalf("events %v", r.types())
	}
	if code := gjson.GetBytes(r.events[len(r.events)-1].Data, "response.error.code").String(); code != "upstream_error" {
		t.Fatalf("code %q", code)
	}
}

// TestKeepAliveWhileUpstreamSilent: pings flow while the upstream thinks;
// they do not count as output, so the turn still completes normally.
func TestKeepAliveWhileUpstreamSilent(t *testing.T) {
	e := newEnv(t, "a")
	e.h.KeepAlive = 5 * time.Millisecond
	e.up.Script("a", relaytest.Step{FirstTokenDelay: 100 * time.Millisecond})
	r := e.do(streamReq)
	if !strings.Contains(string(r.body), ": ping\n\n") {
		t.Fatalf("no keepalive in %q", r.body[:min(len(r.body), 200)])
	}
	if r.lastType() != "response.completed" || r.types()[0] != "response.created" {
		t.Fatalf("events %v", r.types())
	}
}

// TestTerminalWithUsage: response.incomplete and a response.failed after
// output are recorded with their usage, never as zero.
func TestTerminalWithUsage(t *testing.T) {
	for _, c := range []struct {
		step   relaytest.Step
		status string
		last   string
	}{
		{relaytest.Step{End: "incomplete max_output_tokens"}, billing.StatusIncomplete, "response.incomplete"},
		{relaytest.Step{End: "failed server_error"}, billing.StatusFailed, "response.failed"},
	} {
		for _, body := range []string{textReq, streamReq} {
			e := newEnv(t, "a")
			e.up.Script("a", c.step)
			r := e.do(body)
			if r.status != 200 {
				t.Fatalf("status %d", r.status)
			}
			if len(r.events) > 0 && r.lastType() != c.last {
				t.Fatalf("last event %q", r.lastType())
			}
			recs, served := e.sink.all(), e.up.Served()
			if len(recs) != 1 || recs[0].Status != c.status {
				t.Fatalf("records %+v", recs)
			}
			checkUsage(t, recs[0], served[0].Usage)
		}
	}
}

// TestClientGoneDrains: the client leaves before output; the relay keeps
// reading the upstream and records the usage it reported.
func TestClientGoneDrains(t *testing.T) {
	e := newEnv(t, "a")
	e.up.Script("a", relaytest.Step{FirstTokenDelay: 150 * time.Millisecond})
	cancel, done := e.abandonable(streamReq)
	e.WaitInFlight("a", 1)
	cancel()
	<-done
	ctx, stop := context.WithTimeout(context.Background(), 5*time.Second)
	defer stop()
	err := e.up.Wait(ctx, func() bool { return len(e.up.Served()) >= 1 })
	served := e.up.Served()
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the usage record", func() bool { return len(e.sink.all()) == 1 })
	rec := e.sink.all()[0]
	if rec.Status != billing.StatusClientGone || served[0].Status != "completed" {
		t.Fatalf("record status %q, upstream %q", rec.Status, served[0].Status)
	}
	checkUsage(t, rec, served[0].Usage)
}

// TestClientGoneDrainTimeout: the client leaves and the upstream stays
// silent: the drain gives up after DrainTimeout and the slots come back.
func TestClientGoneDrainTimeout(t *testing.T) {
	e := newEnv(t, "a")
	e.h.DrainTimeout = 30 * time.Millisecond
	e.up.Script("a", relaytest.Step{After: 4, Hold: make(chan struct{})})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.srv.URL+"/v1/responses", strings.NewReader(streamReq))
	req.Header.Set("Authorization", "Bearer rk-client")
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	// Read the first event (the relay flushed held events on output).
	buf := make([]byte, 64)
	if _, err := resp.Body.Read(buf); err != nil {
		t.Fatal(err)
	}
	cancel()
	resp.Body.Close()
	waitUntil(t, "the usage record", func() bool { return len(e.sink.all()) == 1 })
	if rec := e.sink.all()[0]; rec.Status != billing.StatusClientGone {
		t.Fatalf("record %+v", rec)
	}
}

// TestClientGoneBeforeHeaders: the upstream hangs and the client leaves;
// the drain bound ends the attempt, nothing is recorded (no upstream
// answered) and no slot stays held.
func TestClientGoneBeforeHeaders(t *testing.T) {
	e := newEnv(t, "a")
	e.h.DrainTimeout = 20 * time.Millisecond
	e.up.Script("a", relaytest.Step{Hold: make(chan struct{})})
	cancel, done := e.abandonable(textReq)
	e.WaitInFlight("a", 1)
	cancel()
	<-done
	waitUntil(t, "the account slot", func() bool { return schedInFlight(e.sched, "a") == 0 })
	if n := len(e.up.Requests()); n != 1 {
		t.Fatalf("the relay failed over after the client left: %d requests", n)
	}
	if n := len(e.sink.all()); n != 0 {
		t.Fatalf("%d records", n)
	}
}

// TestClientGoneWhileQueued: a request waiting for a user slot is dropped
// from the queue when its client leaves; it never reaches the upstream.
func TestClientGoneWhileQueued(t *testing.T) {
	e := newEnv(t, "a")
	e.subj.Concurrency = 1
	release, first := e.holdOne()
	cancel, done := e.abandonable(streamReq)
	waitUntil(t, "a waiter", func() bool { return e.lim.Waiting("user:"+"u1") == 1 })
	cancel()
	<-done
	waitUntil(t, "the queue to empty", func() bool { return e.lim.Waiting("user:"+"u1") == 0 })
	release()
	if r := <-first; r.status != 200 {
		t.Fatalf("first %d", r.status)
	}
	if n := len(e.up.Requests()); n != 1 {
		t.Fatalf("%d upstream requests", n)
	}
	if n := len(e.sink.all()); n != 1 {
		t.Fatalf("%d records", n)
	}
}
