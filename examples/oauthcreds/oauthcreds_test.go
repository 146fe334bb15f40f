package oauthcreds_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/oauth2"

	"github.com/relaykit/responsesrelay/examples/oauthcreds"
	"github.com/relaykit/responsesrelay/scheduler"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Token shapes the fake endpoint issues: distinctive, for leak scans.
func accessToken(n int) string  { return fmt.Sprintf("at-%d-ACCESSCANARY-k2j4h6g8", n) }
func refreshToken(n int) string { return fmt.Sprintf("rt-%d-REFRESHCANARY-q1w3e5r7", n) }

// endpoint is a fake OAuth token endpoint: it accepts grant_type
// refresh_token with its current refresh token (and, when rotating, moves
// to the next one), and answers a careless error quoting the token it
// was sent otherwise.
type endpoint struct {
	t   *testing.T
	srv *httptest.Server

	mu        sync.Mutex
	issued    int    // access tokens issued
	refresh   string // the refresh token it accepts
	rotate    bool
	expiresIn int
	requests  []map[string]string // form values and "basic" (the Authorization header)
	hold      chan struct{}       // when set, each request waits for it
	answer    func(w http.ResponseWriter) bool
}

func newEndpoint(t *testing.T) *endpoint {
	e := &endpoint{t: t, refresh: refreshToken(0), expiresIn: 3600}
	e.srv = httptest.NewServer(http.HandlerFunc(e.serve))
	t.Cleanup(e.srv.Close)
	return e
}

func (e *endpoint) serve(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", 400)
		return
	}
	e.mu.Lock()
	req := map[string]string{"basic": r.Header.Get("Authorization")}
	for k := range r.PostForm {
		req[k] = r.PostForm.Get(k)
	}
	e.requests = append(e.requests, req)
	hold, answer := e.hold, e.answer
	e.mu.Unlock()
	if hold != nil {
		<-hold
	}
	if answer != nil && answer(w) {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if r.PostForm.Get("grant_type") != "refresh_token" || r.PostForm.Get("refresh_token") != e.refresh {
		w.WriteHeader(400)
		json.NewEncoder(w).Encode(map[string]string{"error": "invalid_grant",
			"error_description": "refresh token " + r.PostForm.Get("refresh_token") + " is not valid"})
		return
	}
	e.issued++
	out := map[string]any{"access_token": accessToken(e.issued), "token_type": "Bearer", "expires_in": e.expiresIn}
	if e.rotate {
		e.refresh = refreshToken(e.issued)
		out["refresh_token"] = e.refresh
	}
	json.NewEncoder(w).Encode(out)
}

func (e *endpoint) count() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.requests)
}

func (e *endpoint) request(i int) map[string]string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.requests[i]
}

// source has one account "a" on the endpoint, client "cli".
func (e *endpoint) source(secret string) *oauthcreds.Source {
	s := &oauthcreds.Source{}
	s.Add("a", oauthcreds.Account{
		Config:       oauth2.Config{ClientID: "cli", ClientSecret: secret, Endpoint: oauth2.Endpoint{TokenURL: e.srv.URL + "/token"}},
		RefreshToken: refreshToken(0),
	})
	return s
}

var acctA = &scheduler.Account{ID: "a"}

// Compile-time: a Source is what the relay renews tokens through.
var _ scheduler.Refresher = (*oauthcreds.Source)(nil)

// 32 callers asking at once for an account with no valid token cause
// exactly one token request, and all get its token.
func TestConcurrentCallersShareOneRefresh(t *testing.T) {
	const n = 32
	e := newEndpoint(t)
	e.hold = make(chan struct{})
	release := sync.OnceFunc(func() { close(e.hold) })
	t.Cleanup(release) // before the endpoint closes, should the test fail
	s := e.source("")
	var entered atomic.Int64
	var wg sync.WaitGroup
	got := make([]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			entered.Add(1)
			got[i], errs[i] = s.Token(context.Background(), acctA)
		})
	}
	// The request is held until every caller has started asking.
	waitFor(t, "every caller to ask", func() bool { return entered.Load() == n && e.count() >= 1 })
	release()
	wg.Wait()
	for i := range n {
		if errs[i] != nil || got[i] != accessToken(1) {
			t.Fatalf("caller %d: %q %v", i, got[i], errs[i])
		}
	}
	if c := e.count(); c != 1 {
		t.Fatalf("%d token requests", c)
	}
	req := e.request(0)
	if req["grant_type"] != "refresh_token" || req["refresh_token"] != refreshToken(0) || req["client_id"] != "cli" || req["basic"] != "" {
		t.Fatalf("request %v", req)
	}
}

// waitFor polls cond, for progress of goroutines with no event to wait
// on, and fails t when it does not hold within five seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// A token valid for less than Margin is renewed before use; one valid for
// longer is reused.
func TestRenewedAheadOfExpiry(t *testing.T) {
	e := newEndpoint(t)
	e.expiresIn = 30 // within the default 60 s margin
	s := e.source("")
	for i := 1; i <= 2; i++ {
		if tok, err := s.Token(context.Background(), acctA); err != nil || tok != accessToken(i) {
			t.Fatalf("call %d: %q %v", i, tok, err)
		}
	}
	e.mu.Lock()
	e.expiresIn = 3600
	e.mu.Unlock()
	for range 2 {
		if tok, err := s.Token(context.Background(), acctA); err != nil || tok != accessToken(3) {
			t.Fatalf("%q %v", tok, err)
		}
	}
	if c := e.count(); c != 3 {
		t.Fatalf("%d token requests", c)
	}
	// A negative margin uses a token until it expires.
	s2 := e.source("")
	s2.Margin = -1
	e.mu.Lock()
	e.expiresIn = 30
	e.mu.Unlock()
	a, _ := s2.Token(context.Background(), acctA)
	b, _ := s2.Token(context.Background(), acctA)
	if a != b || e.count() != 4 {
		t.Fatalf("tokens %q %q, %d requests", a, b, e.count())
	}
}

// Refresh renews a rejected token; asked again for the same rejected
// token after someone renewed it, it answers the new one without a
// request.
func TestRefreshRejected(t *testing.T) {
	e := newEndpoint(t)
	s := e.source("")
	first, err := s.Token(context.Background(), acctA)
	if err != nil {
		t.Fatal(err)
	}
	second, err := s.Refresh(context.Background(), acctA, first)
	if err != nil || second != accessToken(2) {
		t.Fatalf("refresh: %q %v", second, err)
	}
	again, err := s.Refresh(context.Background(), acctA, first)
	if err != nil || again != second || e.count() != 2 {
		t.Fatalf("again: %q %v, %d requests", again, err, e.count())
	}
	if tok, _ := s.Token(context.Background(), acctA); tok != second {
		t.Fatalf("token after refresh %q", tok)
	}
	if _, err := s.Token(context.Background(), &scheduler.Account{ID: "nobody"}); !errors.Is(err, oauthcreds.ErrUnknownAccount) {
		t.Fatalf("unknown account: %v", err)
	}
}

// A rotated refresh token is stored before its access token is used, and
// used for the next refresh; a store that fails fails the refresh, and
// the next one stores it before anything else, with no new request.
func TestRotation(t *testing.T) {
	e := newEndpoint(t)
	e.rotate = true
	s := e.source("secret")
	var (
		mu     sync.Mutex
		stored []string
		fail   = true
	)
	s.OnRotate = func(_ context.Context, id, rt string) error {
		mu.Lock()
		defer mu.Unlock()
		if id != "a" {
			t.Errorf("account %q", id)
		}
		if fail {
			fail = false
			return errors.New("disk full while writing " + rt)
		}
		stored = append(stored, rt)
		return nil
	}
	_, err := s.Token(context.Background(), acctA)
	var oe *oauthcreds.Error
	if !errors.As(err, &oe) || !strings.Contains(err.Error(), "storing the rotated refresh token failed: disk full while writing [redacted]") ||
		strings.Contains(err.Error(), "CANARY") {
		t.Fatalf("store failure: %v", err)
	}
	tok, err := s.Token(context.Background(), acctA)
	if err != nil || tok != accessToken(1) || e.count() != 1 {
		t.Fatalf("after the store failure: %q %v, %d requests", tok, err, e.count())
	}
	tok, err = s.Refresh(context.Background(), acctA, tok)
	if err != nil || tok != accessToken(2) {
		t.Fatalf("refresh: %q %v", tok, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(stored, ",") != refreshToken(1)+","+refreshToken(2) {
		t.Fatalf("stored %q", stored)
	}
	if req := e.request(1); req["refresh_token"] != refreshToken(1) || !strings.HasPrefix(req["basic"], "Basic ") || req["client_secret"] != "" {
		t.Fatalf("second request %v", req)
	}
}

// Failed refreshes say what failed without the endpoint's answer, which
// may quote a token.
func TestErrorsCarryNoToken(t *testing.T) {
	cases := []struct {
		name   string
		answer func(w http.ResponseWriter) bool
		want   string
	}{
		{"invalid grant", nil, "the token endpoint answered 400 invalid_grant"},
		{"server error", func(w http.ResponseWriter) bool {
			w.WriteHeader(500)
			fmt.Fprintf(w, "upstream broke with %s", refreshToken(0))
			return true
		}, "the token endpoint answered 500"},
		{"odd code", func(w http.ResponseWriter) bool {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(401)
			fmt.Fprintf(w, `{"error":"bad %s"}`, refreshToken(0))
			return true
		}, "the token endpoint answered 401"},
		{"not a token", func(w http.ResponseWriter) bool {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"token_type":"Bearer","note":"%s"}`, refreshToken(0))
			return true
		}, "not a usable token"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEndpoint(t)
			e.answer = c.answer
			s := e.source("")
			if c.answer == nil {
				s.Add("a", oauthcreds.Account{Config: oauth2.Config{ClientID: "cli", Endpoint: oauth2.Endpoint{TokenURL: e.srv.URL}},
					RefreshToken: "rt-WRONGCANARY-x9y8z7"})
			}
			_, err := s.Token(context.Background(), acctA)
			if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "CANARY") {
				t.Fatalf("error %v", err)
			}
			if _, err := s.Refresh(context.Background(), acctA, "at-anything"); err == nil || strings.Contains(err.Error(), "CANARY") {
				t.Fatalf("refresh error %v", err)
			}
		})
	}
	t.Run("unreachable", func(t *testing.T) {
		e := newEndpoint(t)
		s := e.source("")
		e.srv.Close()
		_, err := s.Token(context.Background(), acctA)
		if err == nil || !strings.Contains(err.Error(), `account "a"`) || strings.Contains(err.Error(), "CANARY") {
			t.Fatalf("error %v", err)
		}
	})
}

// A caller that gives up stops waiting, but the request it started goes
// on: its answer (perhaps a rotated refresh token) is not lost.
func TestCallerGivesUp(t *testing.T) {
	e := newEndpoint(t)
	e.rotate = true
	hold := make(chan struct{})
	e.hold = hold
	release := sync.OnceFunc(func() { close(hold) })
	t.Cleanup(release)
	s := e.source("")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := s.Token(ctx, acctA)
		done <- err
	}()
	waitFor(t, "the token request", func() bool { return e.count() == 1 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v", err)
	}
	e.mu.Lock()
	e.hold = nil
	e.mu.Unlock()
	// The next caller waits for the request in flight, or finds its
	// token adopted: one request, whose rotated refresh token is kept.
	got := make(chan string, 1)
	go func() {
		tok, _ := s.Token(context.Background(), acctA)
		got <- tok
	}()
	release()
	if tok := <-got; tok != accessToken(1) || e.count() != 1 {
		t.Fatalf("token %q, %d requests", tok, e.count())
	}
	if tok, err := s.Refresh(context.Background(), acctA, accessToken(1)); err != nil || tok != accessToken(2) || e.request(1)["refresh_token"] != refreshToken(1) {
		t.Fatalf("refresh after the abandoned one: %q %v", tok, err)
	}
}
