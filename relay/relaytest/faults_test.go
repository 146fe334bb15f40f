package relaytest_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/tidwall/gjson"
)

func TestScriptedStatus(t *testing.T) {
	s := newServer(t)
	s.Script("a",
		relaytest.Step{Status: 429, Header: http.Header{"Retry-After": {"7"}}},
		relaytest.Step{Status: 403, Body: "<html>blocked</html>", Header: http.Header{"Content-Type": {"text/html"}, "X-Request-Id": nil}},
		relaytest.Step{Status: 500},
	)
	s.SetDefault("a", relaytest.Step{Status: 529})

	resp, b := call(t, s, "a", `{"model":"m"}`)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "7" || gjson.GetBytes(b, "error.code").String() != "rate_limit_exceeded" ||
		gjson.GetBytes(b, "error.type").String() != "rate_limit_error" || resp.Header.Get("X-Ratelimit-Remaining-Requests") != "0" {
		t.Errorf("429: %v %s", resp.Header, b)
	}
	// Scripted faults come before authentication.
	resp, b = call(t, s, "a", `not even json`, "Authorization", "")
	if resp.StatusCode != 403 || string(b) != "<html>blocked</html>" || resp.Header.Get("Content-Type") != "text/html" ||
		resp.Header.Get("X-Request-Id") != "" {
		t.Errorf("403: %v %q", resp.Header, b)
	}
	resp, b = call(t, s, "a", `{"model":"m"}`)
	if resp.StatusCode != 500 || gjson.GetBytes(b, "error.type").String() != "server_error" {
		t.Errorf("500: %s", b)
	}
	for range 2 {
		if resp, b = call(t, s, "a", `{"model":"m"}`); resp.StatusCode != 529 || gjson.GetBytes(b, "error.code").String() != "server_is_overloaded" {
			t.Errorf("default: %d %s", resp.StatusCode, b)
		}
	}
	// Other accounts are unaffected; the zero Step restores the default.
	if resp, _ = call(t, s, "b", `{"model":"m"}`); resp.StatusCode != 200 {
		t.Errorf("account b: %d", resp.StatusCode)
	}
	s.SetDefault("a", relaytest.Step{})
	if resp, _ = call(t, s, "a", `{"model":"m"}`); resp.StatusCode != 200 {
		t.Errorf("after SetDefault zero: %d", resp.StatusCode)
	}
	var statuses []int
	for _, sv := range s.Served() {
		statuses = append(statuses, sv.HTTPStatus)
	}
	if want := []int{429, 403, 500, 529, 529, 200, 200}; !equalInts(statuses, want) {
		t.Errorf("served statuses %v, want %v", statuses, want)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestResetBeforeHeaders(t *testing.T) {
	s := newServer(t)
	s.Script("a", relaytest.Step{Cut: true})
	resp, err := send(t, context.Background(), s, "a", `{"model":"m","stream":true}`)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("got status %d, want a transport error", resp.StatusCode)
	}
	served := s.Served()
	if len(served) != 1 || served[0].Status != "aborted" || served[0].HTTPStatus != 0 || served[0].ResponseID != "" {
		t.Errorf("served %+v", served)
	}
	// The next request is normal.
	if resp, _ := call(t, s, "a", `{"model":"m"}`); resp.StatusCode != 200 {
		t.Errorf("next: %d", resp.StatusCode)
	}
}

func TestResetAfterEvents(t *testing.T) {
	s := newServer(t)
	s.Script("a", relaytest.Step{After: 4, Cut: true})
	resp, events, err := stream(t, s, "a", `{"model":"m","stream":true,"input":"x"}`)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if err == nil || len(events) != 4 {
		t.Fatalf("got %d events, err %v; want 4 events and an error", len(events), err)
	}
	checkEvents(t, events)
	served := s.Served()
	if len(served) != 1 || served[0].Status != "aborted" || served[0].Events != 4 || served[0].Usage != (relaytest.Usage{}) ||
		served[0].ResponseID == "" {
		t.Errorf("served %+v", served)
	}

	// Stream:false: headers and half the body, then the cut.
	s.Script("a", relaytest.Step{After: 1, Cut: true})
	resp, err = send(t, context.Background(), s, "a", `{"model":"m"}`)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("json body read error %v, want unexpected EOF", err)
	}

	// A count covering the whole stream: all events, then a cut body.
	s.Script("a", relaytest.Step{After: 1000, Cut: true})
	_, events, err = stream(t, s, "a", `{"model":"m","stream":true}`)
	if err == nil || len(events) != 13 || events[12].Type != "response.completed" {
		t.Errorf("got %v, err %v", types(events), err)
	}
	if sv := s.Served(); sv[2].Status != "completed" || sv[2].Usage.Output != 5 {
		t.Errorf("served %+v", sv[2])
	}
}

// readEvents reads n events from an SSE body without waiting for its end.
func readEvents(t *testing.T, br *bufio.Reader, n int) []string {
	t.Helper()
	var out []string
	for len(out) < n {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("after %d events: %v", len(out), err)
		}
		if name, ok := strings.CutPrefix(strings.TrimRight(line, "\r\n"), "event: "); ok {
			out = append(out, name)
		}
	}
	return out
}

func TestIdleAfterEvents(t *testing.T) {
	s := newServer(t)
	s.Script("a", relaytest.Step{After: 3, Hold: make(chan struct{})})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp, err := send(t, ctx, s, "a", `{"model":"m","stream":true}`)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if got := readEvents(t, br, 3); got[2] != "response.output_item.added" {
		t.Errorf("events %v", got)
	}
	if n := s.InFlight("a"); n != 1 {
		t.Errorf("in flight while idle: %d", n)
	}
	cancel()
	err = s.Wait(context.Background(), func() bool { return len(s.Served()) >= 1 })
	served := s.Served()
	if err != nil {
		t.Fatal(err)
	}
	if served[0].Status != "aborted" || served[0].Events != 3 {
		t.Errorf("served %+v", served[0])
	}
	if n := s.InFlight("a"); n != 0 {
		t.Errorf("in flight after: %d", n)
	}
}

func TestHangAndHold(t *testing.T) {
	s := newServer(t)
	s.Script("a", relaytest.Step{Hold: make(chan struct{})})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		resp, err := send(t, ctx, s, "a", `{"model":"m"}`)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	if err := s.Wait(context.Background(), func() bool { return s.InFlight("a") == 1 }); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("hung request: %v", err)
	}
	_ = s.Wait(context.Background(), func() bool { return len(s.Served()) >= 1 })
	if served := s.Served(); served[0].Status != "aborted" || served[0].HTTPStatus != 0 {
		t.Errorf("served %+v", served[0])
	}

	// Hold three requests, observe them in flight together, release them.
	release := make(chan struct{})
	s.SetDefault("b", relaytest.Step{Hold: release})
	var wg sync.WaitGroup
	codes := make(chan int, 3)
	for range 3 {
		wg.Go(func() {
			resp, err := send(t, context.Background(), s, "b", `{"model":"m","stream":true}`)
			if err != nil {
				codes <- 0
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			codes <- resp.StatusCode
		})
	}
	if err := s.Wait(context.Background(), func() bool { return s.InFlight("b") == 3 }); err != nil {
		t.Fatal(err)
	}
	close(release)
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 200 {
			t.Errorf("held request: %d", c)
		}
	}
	if s.MaxInFlight("b") != 3 || s.InFlight("b") != 0 {
		t.Errorf("in flight %d, max %d", s.InFlight("b"), s.MaxInFlight("b"))
	}
}

func TestFirstTokenDelay(t *testing.T) {
	s := newServer(t)
	s.Script("a", relaytest.Step{FirstTokenDelay: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp, err := send(t, ctx, s, "a", `{"model":"m","stream":true}`)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// created and in_progress come before the delay.
	if got := readEvents(t, bufio.NewReader(resp.Body), 2); got[1] != "response.in_progress" {
		t.Errorf("events %v", got)
	}
	cancel() // the timer must not keep the handler alive
	_ = s.Wait(context.Background(), func() bool { return len(s.Served()) >= 1 })
	if served := s.Served(); served[0].Status != "aborted" || served[0].Events != 2 {
		t.Errorf("served %+v", served[0])
	}

	s.Script("a", relaytest.Step{FirstTokenDelay: time.Millisecond})
	if _, events, err := stream(t, s, "a", `{"model":"m","stream":true}`); err != nil || len(events) != 13 {
		t.Errorf("short delay: %d events, %v", len(events), err)
	}
}

func TestInBandFailures(t *testing.T) {
	s := newServer(t)
	s.Script("a", relaytest.Step{End: "refused server_is_overloaded"}, relaytest.Step{End: "error rate_limit_exceeded"})

	resp, events, err := stream(t, s, "a", `{"model":"m","stream":true}`)
	if err != nil || resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode, err)
	}
	checkEvents(t, events)
	if want := []string{"response.created", "response.in_progress", "response.failed"}; !equal(types(events), want) {
		t.Fatalf("events %v", types(events))
	}
	f := last(events).Get("response")
	if f.Get("status").String() != "failed" || f.Get("error.code").String() != "server_is_overloaded" ||
		f.Get("error.message").String() == "" || f.Get("output.#").Int() != 0 {
		t.Errorf("response.failed %s", f.Raw)
	}

	_, events, err = stream(t, s, "a", `{"model":"m","stream":true}`)
	if err != nil {
		t.Fatal(err)
	}
	checkEvents(t, events)
	if want := []string{"response.created", "response.in_progress", "error"}; !equal(types(events), want) {
		t.Fatalf("events %v", types(events))
	}
	e := last(events)
	if e.Get("error.code").String() != "rate_limit_exceeded" || e.Get("error.type").String() == "" || e.Get("error.message").String() == "" {
		t.Errorf("error event %s", e.Raw)
	}

	// stream:false: a failed response object.
	s.Script("a", relaytest.Step{End: "refused server_error"})
	resp, b := call(t, s, "a", `{"model":"m"}`)
	if resp.StatusCode != 200 || gjson.GetBytes(b, "status").String() != "failed" || gjson.GetBytes(b, "error.code").String() != "server_error" {
		t.Errorf("json: %s", b)
	}

	sv := s.Served()
	if sv[0].Status != "failed" || sv[0].Code != "server_is_overloaded" || sv[0].Usage != (relaytest.Usage{}) || sv[0].Events != 3 {
		t.Errorf("served[0] %+v", sv[0])
	}
	if sv[1].Status != "error" || sv[1].Code != "rate_limit_exceeded" {
		t.Errorf("served[1] %+v", sv[1])
	}
	if sv[2].Status != "failed" || sv[2].Code != "server_error" {
		t.Errorf("served[2] %+v", sv[2])
	}
}

func TestTerminalVariants(t *testing.T) {
	s := newServer(t)
	s.Script("a",
		relaytest.Step{End: "incomplete max_output_tokens"},
		relaytest.Step{End: "failed server_error"},
		relaytest.Step{End: "none"},
	)
	_, events, err := stream(t, s, "a", `{"model":"m","stream":true,"input":"a b c"}`)
	if err != nil {
		t.Fatal(err)
	}
	checkEvents(t, events)
	if want := textTurn(5, "response.incomplete"); !equal(types(events), want) {
		t.Fatalf("events %v", types(events))
	}
	r := last(events).Get("response")
	if r.Get("status").String() != "incomplete" || r.Get("incomplete_details.reason").String() != "max_output_tokens" ||
		r.Get("usage.input_tokens").Int() != 13 || r.Get("output.0.status").String() != "incomplete" {
		t.Errorf("incomplete %s", r.Raw)
	}

	_, events, err = stream(t, s, "a", `{"model":"m","stream":true,"input":"a b c"}`)
	if err != nil {
		t.Fatal(err)
	}
	if want := textTurn(5, "response.failed"); !equal(types(events), want) {
		t.Fatalf("events %v", types(events))
	}
	r = last(events).Get("response")
	if r.Get("status").String() != "failed" || r.Get("error.code").String() != "server_error" ||
		r.Get("usage.output_tokens").Int() != 5 || r.Get("output.0.content.0.text").String() != "Echo: a b c" {
		t.Errorf("failed after output %s", r.Raw)
	}

	_, events, err = stream(t, s, "a", `{"model":"m","stream":true,"input":"a b c"}`)
	if err != nil {
		t.Fatalf("no terminal must be a clean EOF: %v", err)
	}
	if want := textTurn(5, ""); !equal(types(events), want) {
		t.Fatalf("events %v", types(events))
	}

	sv := s.Served()
	want := []relaytest.Usage{{Input: 13, Output: 5}, {Input: 13, Output: 5}, {}}
	statuses := []string{"incomplete", "failed", "aborted"}
	for i := range sv {
		if sv[i].Status != statuses[i] || sv[i].Usage != want[i] {
			t.Errorf("served[%d] %+v", i, sv[i])
		}
	}
}

func TestLargeEvents(t *testing.T) {
	s := newServer(t)
	const pad = 100 << 10
	s.Script("a", relaytest.Step{EventPadding: pad, Deltas: 3})
	_, events, err := stream(t, s, "a", `{"model":"m","stream":true,"input":"big"}`)
	if err != nil {
		t.Fatal(err)
	}
	checkEvents(t, events)
	deltas := 0
	for _, e := range events {
		if e.Type == "response.output_text.delta" {
			deltas++
			if len(e.Data) <= pad || len(gjson.GetBytes(e.Data, "obfuscation").String()) != pad {
				t.Errorf("delta of %d bytes", len(e.Data))
			}
		}
	}
	if deltas != 3 {
		t.Errorf("%d deltas", deltas)
	}
	s.Script("a", relaytest.Step{EventPadding: -1})
	_, events, _ = stream(t, s, "a", `{"model":"m","stream":true}`)
	if o := gjson.GetBytes(events[4].Data, "obfuscation"); !o.Exists() || o.String() != "" {
		t.Errorf("negative padding: %s", events[4].Data)
	}
}

func TestManyDeltas(t *testing.T) {
	s := newServer(t)
	s.SetDefault("a", relaytest.Step{Deltas: 200})
	_, events, err := stream(t, s, "a", `{"model":"m","stream":true,"input":"hi ☃"}`)
	if err != nil {
		t.Fatal(err)
	}
	checkEvents(t, events)
	if want := textTurn(200, "response.completed"); !equal(types(events), want) {
		t.Fatalf("%d events", len(events))
	}
	var text strings.Builder
	for _, e := range events {
		if e.Type == "response.output_text.delta" {
			d := gjson.GetBytes(e.Data, "delta").String()
			if d == "" {
				t.Fatal("empty delta")
			}
			text.WriteString(d)
		}
	}
	want := "Echo: hi ☃" + strings.Repeat(".", 200-10)
	if text.String() != want || last(events).Get("response.output.0.content.0.text").String() != want {
		t.Errorf("text %q", text.String())
	}
	if out := last(events).Get("response.usage.output_tokens").Int(); out != 200 {
		t.Errorf("output tokens %d", out)
	}
}

func TestFraming(t *testing.T) {
	s := newServer(t)
	body := `{"model":"m","stream":true,"input":"frame me",
		"tools": [
			{"type": "function", "name": "lookup"}
		],
		"tool_choice": "none"}`
	_, plain, err := stream(t, s, "a", body+"\n")
	if err != nil {
		t.Fatal(err)
	}
	s.Script("a", relaytest.Step{Events: "crlf multiline comments"})
	resp, err := send(t, context.Background(), s, "a", body)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(raw, []byte(": ping\r\n\r\n")) || !bytes.Contains(raw, []byte("\r\ndata: }\r\n\r\n")) || bytes.Contains(bytes.ReplaceAll(raw, []byte("\r\n"), nil), []byte("\n")) {
		t.Errorf("framing not applied: %.300q", raw)
	}
	framed, err := relaytest.ReadSSE(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if !equal(types(framed), types(plain)) {
		t.Fatalf("framed %v\nplain %v", types(framed), types(plain))
	}
	checkEvents(t, framed)
	for i := range framed {
		if gjson.GetBytes(framed[i].Data, "type").String() != gjson.GetBytes(plain[i].Data, "type").String() {
			t.Errorf("event %d differs", i)
		}
	}
	// The pretty-printed tools are echoed on one data line. The tool is a
	// function and the last input a user message: a call of "lookup".
	r := last(plain).Get("response")
	if r.Get("tools.0.name").String() != "lookup" || r.Get("tool_choice").String() != "none" || r.Get("output.0.name").String() != "lookup" {
		t.Errorf("echo %s", r.Raw)
	}
}

func TestReasoningAndUsageOverride(t *testing.T) {
	s := newServer(t)
	_, b := call(t, s, "a", `{"model":"m","input":"think","reasoning":{"effort":"high","summary":"auto"}}`)
	u := gjson.GetBytes(b, "usage")
	if u.Get("output_tokens_details.reasoning_tokens").Int() != 16 || u.Get("output_tokens").Int() != 21 ||
		u.Get("total_tokens").Int() != 11+21 || gjson.GetBytes(b, "reasoning.effort").String() != "high" {
		t.Errorf("reasoning usage %s", b)
	}
	s.Script("a", relaytest.Step{Usage: &relaytest.Usage{Input: 1000, Cached: 900, Output: 50, Reasoning: 20}})
	_, events, err := stream(t, s, "a", `{"model":"m","stream":true}`)
	if err != nil {
		t.Fatal(err)
	}
	u = last(events).Get("response.usage")
	if u.Raw != `{"input_tokens":1000,"input_tokens_details":{"cached_tokens":900},"output_tokens":50,"output_tokens_details":{"reasoning_tokens":20},"total_tokens":1050}` {
		t.Errorf("usage %s", u.Raw)
	}
	if sv := s.Served(); sv[1].Usage != (relaytest.Usage{Input: 1000, Cached: 900, Output: 50, Reasoning: 20}) {
		t.Errorf("served usage %+v", sv[1].Usage)
	}
}
