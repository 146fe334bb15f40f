package wsconn

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

// TestDialDoesNotFollowRedirects: a 3xx answer to the handshake is a
// *HandshakeError even with a client that follows redirects, and the host
// it names never sees the handshake or its Authorization.
func TestDialDoesNotFollowRedirects(t *testing.T) {
	var reached atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		w.WriteHeader(http.StatusTeapot)
	}))
	t.Cleanup(target.Close)
	for _, code := range []int{http.StatusMovedPermanently, http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, target.URL+"/v1/responses", code)
		}))
		client := srv.Client()
		client.CheckRedirect = func(*http.Request, []*http.Request) error { return nil } // follow everything
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		c, err := Dial(ctx, client, srv.URL+"/v1/responses", http.Header{"Authorization": {"Bearer sk-secret"}})
		cancel()
		srv.Close()
		var he *HandshakeError
		if !errors.As(err, &he) || he.Status != code {
			t.Fatalf("%d: Dial = %v, %v; want a *HandshakeError with the status", code, c, err)
		}
		if he.Header.Get("Location") == "" {
			t.Errorf("%d: the answer's Location is not kept: %v", code, he.Header)
		}
	}
	if n := reached.Load(); n != 0 {
		t.Fatalf("the redirect target got %d requests", n)
	}
}
