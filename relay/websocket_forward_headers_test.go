package relay_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestForwardHeadersEveryTransport: the relay's ForwardHeaders reach the
// upstream on an HTTP request, on a pinned upstream WebSocket's handshake
// and on the HTTP bridge of a WebSocket turn, and unlisted headers do not.
func TestForwardHeadersEveryTransport(t *testing.T) {
	check := func(t *testing.T, up http.Header, where string) {
		t.Helper()
		if up.Get("X-Tenant") != "t-1" {
			t.Fatalf("%s: X-Tenant %q did not reach the upstream: %v", where, up.Get("X-Tenant"), up)
		}
		if v := up.Get("X-Unlisted"); v != "" {
			t.Fatalf("%s: an unlisted header crossed: %q", where, v)
		}
	}
	client := http.Header{"X-Tenant": {"t-1"}, "X-Unlisted": {"no"}, "Authorization": {"Bearer rk-client"}, "User-Agent": {"ua-test/1"}}
	for _, ws := range []bool{true, false} {
		name := map[bool]string{true: "pinned socket", false: "bridge"}[ws]
		t.Run(name, func(t *testing.T) {
			e := newWSEnv(t, ws, "a")
			e.rh.ForwardHeaders = []string{"X-Tenant"}
			c, resp := e.dialStatus(client.Clone())
			if c == nil {
				t.Fatalf("dial: %v", resp)
			}
			c.send(create(``))
			if f := c.recvTurn(); typeOf(last(f)) != "response.completed" {
				t.Fatalf("frames %v", f)
			}
			want := map[bool]string{true: http.MethodGet, false: http.MethodPost}[ws]
			var up http.Header
			for _, q := range e.up.Requests() {
				if q.Method == want {
					up = q.Header
				}
			}
			if up == nil {
				t.Fatalf("no upstream %s", want)
			}
			check(t, up, name)
			// The turn's usage record names the client's User-Agent.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := e.sink.WaitLen(ctx, 1); err != nil {
				t.Fatal(err)
			}
			if ua := e.sink.Records()[0].UserAgent; ua != "ua-test/1" {
				t.Fatalf("usage record user agent %q", ua)
			}
		})
	}
	t.Run("http", func(t *testing.T) {
		e := newWSEnv(t, false, "a")
		e.rh.ForwardHeaders = []string{"X-Tenant"}
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/responses", strings.NewReader(`{"model":"gpt-test","input":"hi"}`))
		req.Header = client.Clone()
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		reqs := e.up.Requests()
		if len(reqs) != 1 {
			t.Fatalf("%d upstream requests", len(reqs))
		}
		check(t, reqs[0].Header, "http")
	})
}
