package relaytest_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/tidwall/gjson"
)

func TestRequestsLogAndGzip(t *testing.T) {
	s := newServer(t)
	var zb bytes.Buffer
	zw := gzip.NewWriter(&zb)
	zw.Write([]byte(`{"model":"m","input":"zipped"}`))
	zw.Close()
	req, _ := http.NewRequest(http.MethodPost, s.BaseURL("z")+"/responses", bytes.NewReader(zb.Bytes()))
	req.Header.Set("Authorization", "Bearer "+testKey)
	req.Header.Set("Content-Encoding", "gzip")
	req.Header.Set("Session_id", "sess-1")
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if gjson.GetBytes(b, "output.0.content.0.text").String() != "Echo: zipped" {
		t.Errorf("gzip body: %s", b)
	}
	reqs := s.Requests()
	if len(reqs) != 1 || reqs[0].Account != "z" || reqs[0].Method != "POST" || !bytes.Equal(reqs[0].Body, zb.Bytes()) ||
		reqs[0].Header.Get("Session_id") != "sess-1" || reqs[0].Header.Get("Authorization") != "Bearer "+testKey {
		t.Errorf("requests %+v", reqs)
	}

	s.Reset()
	if len(s.Requests()) != 0 || len(s.Served()) != 0 || s.MaxInFlight("z") != 0 {
		t.Error("Reset kept logs")
	}
	s.NoLog = true
	call(t, s, "z", `{"model":"m"}`)
	if len(s.Requests()) != 0 || len(s.Served()) != 0 || s.MaxInFlight("z") != 1 {
		t.Error("logging off still logs, or stopped counting")
	}
}

func TestResetClearsScriptsAndStores(t *testing.T) {
	s := newServer(t)
	_, b := call(t, s, "a", `{"model":"m"}`)
	id := gjson.GetBytes(b, "id").String()
	s.Script("a", relaytest.Step{Status: 500})
	s.SetDefault("a", relaytest.Step{Status: 502})
	s.Reset()
	resp, b := call(t, s, "a", `{"model":"m","previous_response_id":"`+id+`"}`)
	if resp.StatusCode != 400 || gjson.GetBytes(b, "error.code").String() != "previous_response_not_found" {
		t.Errorf("after Reset: %d %s", resp.StatusCode, b)
	}
}

func TestConcurrentAccounts(t *testing.T) {
	s := newServer(t)
	s.Script("a", relaytest.Step{Status: 429}, relaytest.Step{After: 3, Cut: true})
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			account := []string{"a", "b", "c", ""}[i%4]
			resp, err := send(t, context.Background(), s, account, `{"model":"m","stream":true,"input":"go"}`)
			if err != nil {
				return
			}
			relaytest.ReadSSE(resp.Body)
			resp.Body.Close()
		})
	}
	wg.Wait()
	if got := len(s.Served()); got != 40 {
		t.Errorf("served %d", got)
	}
	if len(s.Requests()) != 40 {
		t.Errorf("requests %d", len(s.Requests()))
	}
	for _, a := range []string{"a", "b", "c", ""} {
		if s.InFlight(a) != 0 || s.MaxInFlight(a) < 1 {
			t.Errorf("account %q: in flight %d, max %d", a, s.InFlight(a), s.MaxInFlight(a))
		}
	}
}

func TestCloseEndsEverything(t *testing.T) {
	s := relaytest.NewServer()
	s.Script("hang", relaytest.Step{Hold: make(chan struct{})})
	s.Script("idle", relaytest.Step{After: 2, Hold: make(chan struct{})})
	s.Script("hold", relaytest.Step{Hold: make(chan struct{})})
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for _, a := range []string{"hang", "idle", "hold"} {
		wg.Go(func() {
			resp, err := send(t, context.Background(), s, a, `{"model":"m","stream":true}`)
			if err == nil {
				_, err = relaytest.ReadSSE(resp.Body)
				resp.Body.Close()
			}
			errs <- err
		})
	}
	for _, a := range []string{"hang", "idle", "hold"} {
		if err := s.Wait(context.Background(), func() bool { return s.InFlight(a) == 1 }); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err == nil {
			t.Error("a request ended cleanly although the server closed")
		}
	}
	for _, g := range leakedGoroutines() {
		if strings.Contains(g, "relaytest.(*Upstream).ServeHTTP") {
			t.Errorf("handler still running after Close:\n%s", g)
		}
	}
	if sv := s.Served(); len(sv) != 3 {
		t.Errorf("served %+v", sv)
	}
	if leaks := waitNoLeaks(5 * time.Second); len(leaks) > 0 {
		t.Errorf("leaked:\n%s", strings.Join(leaks, "\n\n"))
	}
}

func TestZeroUpstream(t *testing.T) {
	var u relaytest.Upstream
	ts := httptest.NewServer(&u)
	defer ts.Close()
	req, _ := http.NewRequest(http.MethodPost, ts.URL+"/v1/responses", strings.NewReader(`{"model":"m","input":"zero"}`))
	req.Header.Set("Authorization", "Bearer x")
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if gjson.GetBytes(b, "output.0.content.0.text").String() != "Echo: zero" {
		t.Errorf("zero Upstream: %s", b)
	}
	if len(u.Served()) != 1 {
		t.Error("not recorded")
	}
}

func TestReadSSE(t *testing.T) {
	long := strings.Repeat("x", 200<<10)
	in := ": hello\n\n" +
		"event: a\ndata: 1\n\n" +
		"event: b\r\ndata: 2\r\ndata:3\r\nid: 9\r\nretry: 10\r\n\r\n" +
		"event: c\rdata: " + long + "\r\r" +
		"event: no-data\n\n" +
		"data\n\n" +
		"event: cut\ndata: partial\n"
	events, err := relaytest.ReadSSE(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []relaytest.Event{{"a", []byte("1")}, {"b", []byte("2\n3")}, {"c", []byte(long)}, {"", []byte("")}}
	if len(events) != len(want) {
		t.Fatalf("got %d events: %v", len(events), types(events))
	}
	for i := range want {
		if events[i].Type != want[i].Type || !bytes.Equal(events[i].Data, want[i].Data) {
			t.Errorf("event %d: %q %.40q", i, events[i].Type, events[i].Data)
		}
	}
	_, err = relaytest.ReadSSE(io.MultiReader(strings.NewReader("data: x\n\n"), errReader{}))
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("error %v", err)
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, io.ErrUnexpectedEOF }
