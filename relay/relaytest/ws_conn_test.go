package relaytest_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/tidwall/gjson"
)

func TestWSUpgrade(t *testing.T) {
	s := newServer(t)
	body := func(resp *http.Response) []byte {
		b, _ := io.ReadAll(resp.Body)
		return b
	}
	// Authentication comes before the upgrade.
	_, resp, err := dialWS(t, s, "a", "Authorization", "")
	if err == nil || resp == nil || resp.StatusCode != 401 || gjson.GetBytes(body(resp), "error.type").String() != "authentication_error" {
		t.Errorf("no key: %v %v", err, resp)
	}
	s.SetKey("pinned", "sk-right-key-1234567890")
	_, resp, err = dialWS(t, s, "pinned", "Authorization", "Bearer sk-wrong-key-1234567890")
	if err == nil || resp == nil || resp.StatusCode != 401 || gjson.GetBytes(body(resp), "error.code").String() != "invalid_api_key" {
		t.Errorf("wrong key: %v %v", err, resp)
	}
	if _, _, err = dialWS(t, s, "pinned", "Authorization", "Bearer sk-right-key-1234567890"); err != nil {
		t.Errorf("right key: %v", err)
	}

	// Upgrade scripts: a status instead of the upgrade, a reset, a default.
	s.Script("a", relaytest.Step{Upgrade: true, Status: 429, Header: http.Header{"Retry-After": {"3"}}}, relaytest.Step{Upgrade: true, Cut: true})
	_, resp, err = dialWS(t, s, "a")
	if err == nil || resp == nil || resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "3" ||
		gjson.GetBytes(body(resp), "error.code").String() != "rate_limit_exceeded" {
		t.Errorf("429: %v %v", err, resp)
	}
	// A fresh connection: net/http retries a GET cut on a reused one.
	s.Client().CloseIdleConnections()
	if _, resp, err = dialWS(t, s, "a"); err == nil || resp != nil {
		t.Errorf("reset: %v %v", err, resp)
	}
	s.SetDefault("a", relaytest.Step{Upgrade: true, Status: 426})
	if _, resp, _ = dialWS(t, s, "a"); resp == nil || resp.StatusCode != 426 {
		t.Errorf("default 426: %v", resp)
	}
	s.SetDefault("a", relaytest.Step{Upgrade: true})

	// The 101 carries the usual headers and the step's.
	s.Script("a", relaytest.Step{Upgrade: true, Header: http.Header{"X-Codex-Primary-Used-Percent": {"12"}}})
	// Upgrades do not take the account's turn steps.
	s.Script("a", relaytest.Step{Status: 502})
	c, resp, err := dialWS(t, s, "a")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 || !strings.HasPrefix(resp.Header.Get("X-Request-Id"), "req_") ||
		resp.Header.Get("X-Codex-Primary-Used-Percent") != "12" || resp.Header.Get("Content-Type") != "" {
		t.Errorf("101 headers %v", resp.Header)
	}
	checkError(t, wsTurn(t, c, `{"type":"response.create","model":"m"}`)[0], 502, "server_error", "", "")

	// Hold keeps the upgrade in flight.
	release := make(chan struct{})
	s.Script("h", relaytest.Step{Upgrade: true, Hold: release})
	errc := make(chan error, 1)
	go func() {
		_, _, err := dialWS(t, s, "h")
		errc <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), wsTimeout)
	defer cancel()
	if err := s.Wait(ctx, func() bool { return s.InFlight("h") == 1 }); err != nil {
		t.Fatal(err)
	}
	if s.WSConns("h") != 0 {
		t.Error("held upgrade counted as open")
	}
	close(release)
	if err := <-errc; err != nil {
		t.Errorf("held upgrade: %v", err)
	}
	if s.InFlight("h") != 0 || s.WSConns("h") != 1 {
		t.Errorf("after upgrade: in flight %d, conns %d", s.InFlight("h"), s.WSConns("h"))
	}

	var got []string
	for _, sv := range s.Served() {
		if !sv.WebSocket {
			t.Errorf("not marked WebSocket: %+v", sv)
		}
		got = append(got, sv.Status)
	}
	want := []string{"error", "error", "upgraded", "error", "aborted", "error", "upgraded", "error", "upgraded"}
	if !equal(got, want) {
		t.Errorf("served %v\nwant %v", got, want)
	}
}

func TestWSPlainGetAndBadHandshake(t *testing.T) {
	s := newServer(t)
	do := func(hdr http.Header) int {
		req, _ := http.NewRequest(http.MethodGet, s.BaseURL("a")+"/responses", nil)
		req.Header = hdr
		req.Header.Set("Authorization", "Bearer "+testKey)
		resp, err := s.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := do(http.Header{}); got != 426 {
		t.Errorf("plain GET: %d", got)
	}
	// Upgrade headers without a valid handshake: the WebSocket library's 400.
	if got := do(http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}}); got != 400 {
		t.Errorf("bad handshake: %d", got)
	}
	if sv := s.Served(); len(sv) != 2 || sv[0].WebSocket || !sv[1].WebSocket || sv[1].HTTPStatus != 400 || sv[1].Status != "error" ||
		s.InFlight("a") != 0 || s.WSConns("a") != 0 {
		t.Errorf("served %+v", sv)
	}
}

func TestWSMaxAge(t *testing.T) {
	s := newServer(t)
	s.WSMaxAge = time.Hour
	c := openWS(t, s, "a")
	completedID(t, wsTurn(t, c, `{"type":"response.create","model":"m"}`))
	// The limit applies to open connections at the next turn.
	s.WSMaxAge = time.Nanosecond
	m := wsTurn(t, c, `{"type":"response.create","model":"m"}`)[0]
	checkError(t, m, 400, "invalid_request_error", "websocket_connection_limit_reached", "")
	if !strings.Contains(m.Get("error.message").String(), "new websocket connection") {
		t.Errorf("message %s", m.Get("error.message"))
	}
	if _, err := wsReadUntilError(c); websocket.CloseStatus(err) != websocket.StatusNormalClosure {
		t.Errorf("close %v", err)
	}
	waitWSConns(t, s, "a", 0)
	s.WSMaxAge = -1
	c = openWS(t, s, "a")
	completedID(t, wsTurn(t, c, `{"type":"response.create","model":"m"}`))
	s.WSMaxAge = 0 // the default 60 minutes
	completedID(t, wsTurn(t, c, `{"type":"response.create","model":"m"}`))
}

func TestWSURL(t *testing.T) {
	s := newServer(t)
	if got, want := s.WSURL(""), "ws"+strings.TrimPrefix(s.URL, "http")+"/v1/responses"; got != want {
		t.Errorf("WSURL(\"\") = %q, want %q", got, want)
	}
	if got := s.WSURL("team 1"); !strings.HasSuffix(got, "/team%201/v1/responses") || !strings.HasPrefix(got, "ws://") {
		t.Errorf("WSURL(team 1) = %q", got)
	}
	c := openWS(t, s, "team 1")
	completedID(t, wsTurn(t, c, `{"type":"response.create","model":"m"}`))
	if s.WSConns("team 1") != 1 || s.WSConns("other") != 0 {
		t.Errorf("conns %d", s.WSConns("team 1"))
	}
}

func TestWSCloseEndsEverything(t *testing.T) {
	s := relaytest.NewServer()
	s.Script("hang", relaytest.Step{Hold: make(chan struct{})})
	s.Script("idle", relaytest.Step{After: 2, Hold: make(chan struct{})})
	s.Script("hold", relaytest.Step{Hold: make(chan struct{})})
	s.Script("slow", relaytest.Step{FirstTokenDelay: time.Hour})
	accounts := []string{"hang", "idle", "hold", "slow", "quiet"}
	var wg sync.WaitGroup
	errs := make(chan error, len(accounts))
	for _, a := range accounts {
		c := openWS(t, s, a)
		if a != "quiet" {
			wsSend(t, c, `{"type":"response.create","model":"m"}`)
		}
		wg.Go(func() {
			_, err := wsReadUntilError(c)
			errs <- err
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), wsTimeout)
	defer cancel()
	for _, a := range accounts[:4] {
		if err := s.Wait(ctx, func() bool { return s.InFlight(a) == 1 }); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	wg.Wait()
	close(errs)
	for err := range errs {
		if websocket.CloseStatus(err) != -1 {
			t.Errorf("read ended with %v, want a cut connection", err)
		}
	}
	for _, a := range accounts {
		if s.WSConns(a) != 0 || s.InFlight(a) != 0 {
			t.Errorf("%s: conns %d, in flight %d", a, s.WSConns(a), s.InFlight(a))
		}
	}
	// Close has waited for every connection's goroutines to signal their
	// end; one may still be returning, so the check below polls.
	if sv := s.Served(); len(sv) != 5+4 {
		t.Errorf("served %d", len(sv))
	}
	if leaks := waitNoLeaks(5 * time.Second); len(leaks) > 0 {
		t.Errorf("leaked:\n%s", strings.Join(leaks, "\n\n"))
	}
}

func TestWSConcurrentConnections(t *testing.T) {
	s := newServer(t)
	s.SetDefault("a", relaytest.Step{Deltas: 20})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			c, _, err := dialWS(t, s, "a")
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close(websocket.StatusNormalClosure, "")
			prev := ""
			for range 5 {
				msg := `{"type":"response.create","model":"m","store":false,"input":"go"` + prev + `}`
				if err := c.Write(context.Background(), websocket.MessageText, []byte(msg)); err != nil {
					t.Error(err)
					return
				}
				for {
					m, err := wsRecv(c)
					if err != nil {
						t.Error(err)
						return
					}
					if m.Get("type").String() == "response.completed" {
						prev = `,"previous_response_id":"` + m.Get("response.id").String() + `"`
						break
					}
					if isEnd(m) {
						t.Errorf("turn ended with %s", m.Raw)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	waitWSConns(t, s, "a", 0)
	if got := len(s.Served()); got != 8*6 {
		t.Errorf("served %d", got)
	}
	if s.InFlight("a") != 0 || s.MaxInFlight("a") < 1 {
		t.Errorf("in flight %d, max %d", s.InFlight("a"), s.MaxInFlight("a"))
	}
}
