package relaytest_test

import (
	"bufio"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/relaykit/responsesrelay/relay/relaytest"
)

// TestHoldThenCut: Hold and Cut at the same After pause the stream, then
// cut it once the hold ends.
func TestHoldThenCut(t *testing.T) {
	s := newServer(t)
	release := make(chan struct{})
	s.Script("a", relaytest.Step{After: 4, Hold: release, Cut: true})
	resp, err := send(t, context.Background(), s, "a", `{"model":"m","stream":true}`)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	readEvents(t, br, 4)
	if n := s.InFlight("a"); n != 1 {
		t.Fatalf("in flight while held: %d", n)
	}
	close(release)
	// readEvents stops after the event: line; the rest of that event was
	// written before the hold, and nothing after it.
	if rest, err := relaytest.ReadSSE(br); err == nil || len(rest) != 1 {
		t.Fatalf("after the hold: %d events, %v; want a cut body", len(rest), err)
	}
	if err := s.Wait(context.Background(), func() bool { return len(s.Served()) == 1 }); err != nil {
		t.Fatal(err)
	}
	if sv := s.Served()[0]; sv.Status != "aborted" || sv.Events != 4 || s.InFlight("a") != 0 {
		t.Fatalf("served %+v", sv)
	}
}

// TestHoldAfterWholeStream: an After that covers the stream holds after
// the terminal event, before the body's clean end.
func TestHoldAfterWholeStream(t *testing.T) {
	s := newServer(t)
	release := make(chan struct{})
	s.Script("a", relaytest.Step{After: 1000, Hold: release})
	resp, err := send(t, context.Background(), s, "a", `{"model":"m","stream":true}`)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if got := readEvents(t, br, 13); got[12] != "response.completed" {
		t.Fatalf("events %v", got)
	}
	if n := s.InFlight("a"); n != 1 {
		t.Fatalf("in flight while held: %d", n)
	}
	close(release)
	// The data: line of response.completed was written before the hold.
	if rest, err := relaytest.ReadSSE(br); err != nil || len(rest) != 1 || !strings.Contains(string(rest[0].Data), "response.completed") {
		t.Fatalf("after the hold: %d events, %v; want a clean end", len(rest), err)
	}
	if sv := s.Served(); len(sv) != 1 || sv[0].Status != "completed" || sv[0].Events != 13 {
		t.Fatalf("served %+v", sv)
	}
}

// TestScriptSortsUpgradeSteps: one Script call queues upgrade steps apart
// from turn steps, whatever their order.
func TestScriptSortsUpgradeSteps(t *testing.T) {
	s := newServer(t)
	s.Script("a", relaytest.Step{Upgrade: true, Status: http.StatusTooManyRequests},
		relaytest.Step{End: "refused server_is_overloaded"})
	_, events, err := stream(t, s, "a", `{"model":"m","stream":true}`)
	if err != nil || last(events).Get("response.error.code").String() != "server_is_overloaded" {
		t.Fatalf("turn: %v, %v", types(events), err)
	}
	if _, resp, err := dialWS(t, s, "a"); err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("upgrade: %v, %+v", err, resp)
	}
	openWS(t, s, "a") // both queues are empty again
}

// TestStepMisspellingPanics: an unknown End or Events word is a test bug,
// reported at once rather than played as the normal behaviour.
func TestStepMisspellingPanics(t *testing.T) {
	for _, st := range []relaytest.Step{{End: "refuse"}, {Events: "crfl"}, {FunctionCall: "f"}} {
		u := relaytest.New()
		u.Script("", st)
		r := httptest.NewRequest(http.MethodPost, "/v1/responses", strings.NewReader(`{"model":"m","stream":true}`))
		r.Header.Set("Authorization", "Bearer "+testKey)
		func() {
			defer func() {
				if p, _ := recover().(string); !strings.HasPrefix(p, "relaytest: ") {
					t.Errorf("%+v: panic %q", st, p)
				}
			}()
			u.ServeHTTP(httptest.NewRecorder(), r)
		}()
		if u.InFlight("") != 0 {
			t.Errorf("%+v: still in flight", st)
		}
	}
}
