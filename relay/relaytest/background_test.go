package relaytest_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/relaykit/responsesrelay/relay/relaytest"
)

// getStream retrieves a response's events as SSE. It reports failures
// with Errorf, so that goroutines may call it.
func getStream(t *testing.T, s *relaytest.Server, account, id, query string) []relaytest.Event {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, s.BaseURL(account)+"/responses/"+id+"?stream=true"+query, nil)
	if err != nil {
		t.Error(err)
		return nil
	}
	req.Header.Set("Authorization", "Bearer "+testKey)
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Error(err)
		return nil
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Errorf("stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		return nil
	}
	events, err := relaytest.ReadSSE(resp.Body)
	if err != nil {
		t.Error(err)
	}
	return events
}

func TestRetrieveStreamReplay(t *testing.T) {
	s := newServer(t)
	_, events, err := stream(t, s, "a", `{"model":"gpt-5","stream":true,"input":"hello there"}`)
	if err != nil {
		t.Fatal(err)
	}
	id := last(events).Get("response.id").String()
	replay := getStream(t, s, "a", id, "")
	if len(replay) != len(events) {
		t.Fatalf("replay: %d events, want %d", len(replay), len(events))
	}
	for i := range events {
		if string(replay[i].Data) != string(events[i].Data) {
			t.Errorf("event %d:\n%s\nwant\n%s", i, replay[i].Data, events[i].Data)
		}
	}
	tail := getStream(t, s, "a", id, "&starting_after=5")
	if len(tail) != len(events)-6 || gjson.GetBytes(tail[0].Data, "sequence_number").Int() != 6 {
		t.Fatalf("starting_after=5: %d events", len(tail))
	}
	if got := getStream(t, s, "a", id, "&starting_after=100"); len(got) != 0 {
		t.Errorf("starting_after past the end: %d events", len(got))
	}
	code, r := do(t, s, http.MethodGet, "a", "/responses/"+id+"?stream=true&starting_after=-1", "")
	if code != 400 || r.Get("error.param").String() != "starting_after" {
		t.Errorf("bad starting_after: %d %s", code, r.Raw)
	}
	code, r = do(t, s, http.MethodGet, "b", "/responses/"+id+"?stream=true", "")
	checkNotFound(t, code, r, id)
	sv := s.Served()
	if got := sv[1]; got.Events != len(events) || got.Status != "completed" || got.Usage.Input == 0 {
		t.Errorf("served replay: %+v", got)
	}
	if got := sv[2]; got.Events != len(events)-6 || got.Status != "completed" {
		t.Errorf("served tail: %+v", got)
	}
}

func TestBackgroundCompletesAfterHold(t *testing.T) {
	s := newServer(t)
	hold := make(chan struct{})
	s.Script("a", relaytest.Step{Hold: hold})
	r := create(t, s, "a", `{"model":"gpt-5","background":true,"input":"hello there"}`)
	id := r.Get("id").String()
	if r.Get("status").String() != "queued" || r.Get("background").Raw != "true" || r.Get("usage").Raw != "null" ||
		r.Get("output").Raw != "[]" {
		t.Fatalf("create: %s", r.Raw)
	}
	if got := s.Served()[0]; got.Status != "queued" || got.ResponseID != id {
		t.Errorf("served: %+v", got)
	}
	code, got := do(t, s, http.MethodGet, "a", "/responses/"+id, "")
	if code != 200 || got.Get("status").String() != "queued" {
		t.Fatalf("while held: %d %s", code, got.Raw)
	}
	code, got = do(t, s, http.MethodGet, "b", "/responses/"+id, "")
	checkNotFound(t, code, got, id)

	// A follower sees the events as they come, once the work goes on.
	done := make(chan []relaytest.Event)
	go func() { done <- getStream(t, s, "a", id, "&starting_after=0") }()
	if err := s.Wait(context.Background(), func() bool { return s.InFlight("a") == 1 }); err != nil {
		t.Fatal(err)
	}
	close(hold)
	events := <-done
	if want := textTurn(5, "response.completed")[1:]; !equal(types(events), want) {
		t.Errorf("followed: %v", types(events))
	}
	code, got = do(t, s, http.MethodGet, "a", "/responses/"+id, "")
	if code != 200 || got.Get("status").String() != "completed" || got.Get("usage.input_tokens").Int() != 12 ||
		got.Get("output.0.content.0.text").String() != "Echo: hello there" {
		t.Errorf("after hold: %d %s", code, got.Raw)
	}
	if got.Raw != last(events).Get("response").Raw {
		t.Errorf("retrieved %s\nterminal %s", got.Raw, last(events).Get("response").Raw)
	}
	code, got = do(t, s, http.MethodPost, "a", "/responses/"+id+"/cancel", "")
	if code != 200 || got.Get("status").String() != "completed" {
		t.Errorf("cancel after completion: %d %s", code, got.Raw)
	}
}

func TestBackgroundStream(t *testing.T) {
	s := newServer(t)
	_, events, err := stream(t, s, "a", `{"model":"gpt-5","background":true,"stream":true,"input":"hi"}`)
	if err != nil {
		t.Fatal(err)
	}
	checkEvents(t, events)
	if !equal(types(events), textTurn(5, "response.completed")) {
		t.Fatalf("events: %v", types(events))
	}
	first := gjson.ParseBytes(events[0].Data)
	if first.Get("response.status").String() != "queued" || first.Get("response.background").Raw != "true" {
		t.Errorf("created: %s", first.Raw)
	}
	id := first.Get("response.id").String()
	_, got := do(t, s, http.MethodGet, "a", "/responses/"+id, "")
	if got.Get("status").String() != "completed" || got.Get("usage.output_tokens").Int() != 5 {
		t.Errorf("retrieved: %s", got.Raw)
	}
	if sv := s.Served()[0]; sv.Status != "completed" || sv.Events != len(events) || sv.Usage.Output != 5 {
		t.Errorf("served: %+v", sv)
	}
}

func TestBackgroundCancel(t *testing.T) {
	s := newServer(t)
	hold := make(chan struct{})
	defer close(hold)
	s.Script("a", relaytest.Step{Hold: hold, After: 6}) // pause after two deltas
	resp, err := send(t, context.Background(), s, "a", `{"model":"gpt-5","background":true,"stream":true,"input":"a b c"}`)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// Read up to the pause: the created event names the response.
	buf := make([]byte, 1)
	var seen strings.Builder
	for strings.Count(seen.String(), "\n\n") < 6 {
		if _, err := resp.Body.Read(buf); err != nil {
			t.Fatal(err)
		}
		seen.WriteByte(buf[0])
	}
	id := gjson.Get(strings.TrimPrefix(strings.Split(seen.String(), "\n")[1], "data: "), "response.id").String()
	code, got := do(t, s, http.MethodGet, "a", "/responses/"+id, "")
	if code != 200 || got.Get("status").String() != "in_progress" {
		t.Fatalf("paused: %d %s", code, got.Raw)
	}
	code, got = do(t, s, http.MethodPost, "a", "/responses/"+id+"/cancel", "")
	if code != 200 || got.Get("status").String() != "cancelled" || got.Get("usage.output_tokens").Int() != 2 ||
		got.Get("usage.input_tokens").Int() != 13 {
		t.Errorf("cancel: %d %s", code, got.Raw)
	}
	// The create's stream ends cleanly without a terminal event.
	rest, err := relaytest.ReadSSE(resp.Body)
	if err != nil || len(rest) != 0 {
		t.Errorf("after cancel: %d events, %v", len(rest), err)
	}
	if err := s.Wait(context.Background(), func() bool { return s.InFlight("a") == 0 }); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, sv := range s.Served() {
		if sv.Seq == 1 {
			found = true
			if sv.Status != "cancelled" || sv.Events != 6 {
				t.Errorf("served: %+v", sv)
			}
		}
	}
	if !found {
		t.Error("the create was not recorded")
	}
	_, got = do(t, s, http.MethodGet, "a", "/responses/"+id, "")
	if got.Get("status").String() != "cancelled" {
		t.Errorf("after cancel: %s", got.Raw)
	}
	if ev := getStream(t, s, "a", id, ""); len(ev) != 6 {
		t.Errorf("replay of cancelled: %d events", len(ev))
	}
}

func TestCancelErrors(t *testing.T) {
	s := newServer(t)
	id := create(t, s, "a", `{"model":"gpt-5","input":"x"}`).Get("id").String()
	code, r := do(t, s, http.MethodPost, "a", "/responses/"+id+"/cancel", "")
	if want := `{"error":{"message":"Only background responses can be cancelled.","type":"invalid_request_error","param":null,"code":null}}`; code != 400 || r.Raw != want {
		t.Errorf("cancel foreground: %d %s", code, r.Raw)
	}
	code, r = do(t, s, http.MethodPost, "b", "/responses/"+id+"/cancel", "")
	checkNotFound(t, code, r, id)
	code, r = do(t, s, http.MethodPost, "a", "/responses", `{"model":"gpt-5","background":true,"store":false,"input":"x"}`)
	if code != 400 || r.Get("error.param").String() != "background" {
		t.Errorf("background without store: %d %s", code, r.Raw)
	}
	code, r = do(t, s, http.MethodPost, "a", "/responses", `{"model":"gpt-5","background":"yes","input":"x"}`)
	if code != 400 || r.Get("error.code").String() != "invalid_type" {
		t.Errorf("background not a boolean: %d %s", code, r.Raw)
	}
}

// A job held forever stops with the server, as do its followers.
func TestBackgroundStopsOnClose(t *testing.T) {
	s := relaytest.NewServer()
	s.Script("a", relaytest.Step{Hold: make(chan struct{})})
	id := create(t, s, "a", `{"model":"gpt-5","background":true,"input":"x"}`).Get("id").String()
	req, err := http.NewRequest(http.MethodGet, s.BaseURL("a")+"/responses/"+id+"?stream=true", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testKey)
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, _ = relaytest.ReadSSE(resp.Body)
	resp.Body.Close()
	if leaks := waitNoLeaks(5 * time.Second); len(leaks) > 0 {
		t.Errorf("leaked:\n%s", strings.Join(leaks, "\n\n"))
	}
}

// Deleting a running background response stops its job; its followers'
// streams end without a terminal event.
func TestBackgroundDelete(t *testing.T) {
	s := newServer(t)
	hold := make(chan struct{})
	defer close(hold)
	s.Script("a", relaytest.Step{Hold: hold})
	id := create(t, s, "a", `{"model":"gpt-5","background":true,"input":"x"}`).Get("id").String()
	done := make(chan []relaytest.Event)
	go func() { done <- getStream(t, s, "a", id, "") }()
	if err := s.Wait(context.Background(), func() bool { return s.InFlight("a") == 1 }); err != nil {
		t.Fatal(err)
	}
	code, r := do(t, s, http.MethodDelete, "a", "/responses/"+id, "")
	if code != 200 || !r.Get("deleted").Bool() {
		t.Fatalf("delete: %d %s", code, r.Raw)
	}
	if events := <-done; !equal(types(events), []string{"response.created"}) {
		t.Errorf("follower: %v", types(events))
	}
	code, r = do(t, s, http.MethodPost, "a", "/responses/"+id+"/cancel", "")
	checkNotFound(t, code, r, id)
}

// Over a WebSocket background is validated, then the turn runs as usual.
func TestBackgroundIgnoredOnWebSocket(t *testing.T) {
	s := newServer(t)
	c := openWS(t, s, "a")
	wsSend(t, c, `{"type":"response.create","model":"gpt-5","background":true,"store":false,"input":"x"}`)
	if m := wsRead(t, c); m.Get("error.param").String() != "background" {
		t.Errorf("store:false: %s", m.Raw)
	}
	wsSend(t, c, `{"type":"response.create","model":"gpt-5","background":true,"input":"x"}`)
	for {
		m := wsRead(t, c)
		if m.Get("type").String() == "response.created" && m.Get("response.status").String() != "in_progress" {
			t.Errorf("created: %s", m.Raw)
		}
		if m.Get("type").String() == "response.completed" {
			if m.Get("response.background").Raw != "false" {
				t.Errorf("completed: %s", m.Raw)
			}
			break
		}
	}
}
