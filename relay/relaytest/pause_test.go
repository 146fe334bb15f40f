package relaytest_test

import (
	"bufio"
	"context"
	"strings"
	"testing"

	"github.com/relaykit/responsesrelay/relay/relaytest"
)

// TestPauseAfterEvents: the stream stops after N events, stays in flight,
// and finishes normally once Hold is closed.
func TestPauseAfterEvents(t *testing.T) {
	s := newServer(t)
	resume := make(chan struct{})
	s.Script("a", relaytest.Step{After: 4, Hold: resume})
	resp, err := send(t, context.Background(), s, "a", `{"model":"m","stream":true}`)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if got := readEvents(t, br, 4); got[3] != "response.content_part.added" {
		t.Fatalf("events before the pause %v", got)
	}
	if n := s.InFlight("a"); n != 1 {
		t.Fatalf("in flight while paused: %d", n)
	}
	if n := len(s.Served()); n != 0 {
		t.Fatalf("a paused stream was recorded as served")
	}
	close(resume)
	rest, err := relaytest.ReadSSE(br)
	if err != nil || len(rest) == 0 || rest[len(rest)-1].Type != "response.completed" {
		t.Fatalf("after resume: %v, %v", types(rest), err)
	}
	sv := s.Served()
	if len(sv) != 1 || sv[0].Status != "completed" || sv[0].Events != 13 || sv[0].Usage.Output == 0 {
		t.Fatalf("served %+v", sv)
	}
}

// TestPauseCutByClient: a client that leaves during the pause ends the
// answer as aborted, with the events written so far.
func TestPauseCutByClient(t *testing.T) {
	s := newServer(t)
	s.Script("a", relaytest.Step{After: 3, Hold: make(chan struct{})})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp, err := send(t, ctx, s, "a", `{"model":"m","stream":true}`)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	readEvents(t, bufio.NewReader(resp.Body), 3)
	cancel()
	err = s.Wait(context.Background(), func() bool { return len(s.Served()) >= 1 })
	sv := s.Served()
	if err != nil {
		t.Fatal(err)
	}
	if sv[0].Status != "aborted" || sv[0].Events != 3 {
		t.Fatalf("served %+v", sv[0])
	}
}

// TestPauseWithoutResume: After alone (no Hold, no Cut) does nothing.
func TestPauseWithoutResume(t *testing.T) {
	s := newServer(t)
	s.Script("a", relaytest.Step{After: 2})
	if _, evs, err := stream(t, s, "a", `{"model":"m","stream":true}`); err != nil || evs[len(evs)-1].Type != "response.completed" {
		t.Fatalf("%v %v", types(evs), err)
	}
}

// TestWSPause: a WebSocket turn pauses too, and the connection serves the
// next turn after it resumes.
func TestWSPause(t *testing.T) {
	s := newServer(t)
	resume := make(chan struct{})
	s.Script("a", relaytest.Step{After: 3, Hold: resume})
	c := openWS(t, s, "a")
	wsSend(t, c, `{"type":"response.create","model":"m","input":"hi"}`)
	for i := 0; i < 3; i++ {
		wsRead(t, c)
	}
	if n := s.InFlight("a"); n != 1 {
		t.Fatalf("in flight while paused: %d", n)
	}
	close(resume)
	var last string
	for last != "response.completed" {
		last = wsRead(t, c).Get("type").String()
	}
	if ms := wsTurn(t, c, `{"type":"response.create","model":"m","input":"again"}`); !isEnd(ms[len(ms)-1]) {
		t.Fatalf("next turn %v", msgTypes(ms))
	}
}

// TestSeqLinksServedToReceived: every answer names the request it answers,
// HTTP and WebSocket alike, and Reset does not reuse numbers.
func TestSeqLinksServedToReceived(t *testing.T) {
	s := newServer(t)
	s.Script("b", relaytest.Step{Status: 500})
	call(t, s, "a", `{"model":"m","input":"one"}`)
	call(t, s, "b", `{"model":"m","input":"two"}`)
	c := openWS(t, s, "a")
	wsTurn(t, c, `{"type":"response.create","model":"m","input":"three"}`)
	c.CloseNow()
	waitWSConns(t, s, "a", 0)
	byseq := map[int64]relaytest.Received{}
	for _, r := range s.Requests() {
		if r.Seq == 0 || byseq[r.Seq].Seq != 0 {
			t.Fatalf("request %+v has a missing or repeated Seq", r)
		}
		byseq[r.Seq] = r
	}
	want := map[string]string{"one": "completed", "two": "error", "three": "completed"}
	seen := 0
	for _, sv := range s.Served() {
		r, ok := byseq[sv.Seq]
		if !ok {
			t.Fatalf("served %+v names no request", sv)
		}
		for input, status := range want {
			if containsInput(r.Body, input) {
				seen++
				if sv.Status != status || sv.Account != r.Account {
					t.Fatalf("%s: served %+v for %s", input, sv, r.Body)
				}
			}
		}
	}
	if seen != 3 {
		t.Fatalf("%d of 3 answers linked", seen)
	}
	last := s.Requests()[len(s.Requests())-1].Seq
	s.Reset()
	call(t, s, "a", `{"model":"m","input":"four"}`)
	if got := s.Requests(); len(got) != 1 || got[0].Seq <= last {
		t.Fatalf("after Reset: %+v (last before %d)", got, last)
	}
}

func containsInput(body []byte, input string) bool {
	return strings.Contains(string(body), `"input":"`+input+`"`)
}
