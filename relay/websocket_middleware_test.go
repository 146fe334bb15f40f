package relay_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestWebSocketBehindWrappingMiddleware: behind a wrapper with Unwrap the
// WebSocket mode works; behind one without, the upgrade is answered 501
// before any 101 (never a 101 followed by garbage), and it is logged.
func TestWebSocketBehindWrappingMiddleware(t *testing.T) {
	for _, c := range []struct {
		name string
		wrap func(http.ResponseWriter) http.ResponseWriter
		ok   bool
	}{
		{"with_unwrap", func(w http.ResponseWriter) http.ResponseWriter { return &unwrapWrapper{plainWrapper{w: w}} }, true},
		{"without_unwrap", func(w http.ResponseWriter) http.ResponseWriter { return &plainWrapper{w: w} }, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newWSEnv(t, true, "a")
			e.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { e.rh.ServeHTTP(c.wrap(w), r) })
			if c.ok {
				cl := e.dial()
				cl.send(create(``))
				if f := cl.recvTurn(); typeOf(last(f)) != "response.completed" {
					t.Fatalf("frames %v", f)
				}
				cl.ws.Close(websocket.StatusNormalClosure, "")
				return
			}
			cl, resp := e.dialStatus(http.Header{"Authorization": {"Bearer rk-client"}})
			if cl != nil || resp == nil || resp.StatusCode != http.StatusNotImplemented {
				t.Fatalf("handshake %v", resp)
			}
			if !strings.Contains(e.logs.String(), "cannot be hijacked") {
				t.Fatalf("not logged:\n%s", e.logs.String())
			}
		})
	}
}

// TestPlainGetIsToldToUpgrade: a GET without an upgrade on the WebSocket
// endpoint is told what the endpoint expects.
func TestPlainGetIsToldToUpgrade(t *testing.T) {
	e := newWSEnv(t, true, "a")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.srv.URL+"/v1/responses", nil)
	rec := httptest.NewRecorder()
	e.rh.ServeHTTP(rec, req)
	if rec.Code != http.StatusUpgradeRequired || rec.Header().Get("Upgrade") != "websocket" {
		t.Fatalf("status %d, headers %v", rec.Code, rec.Header())
	}
	if body := rec.Body.String(); !strings.Contains(body, "send a WebSocket upgrade") || strings.Contains(body, "not enabled") {
		t.Fatalf("body %s", body)
	}
}
