package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/relaykit/responsesrelay/internal/relaytestenv"
	"github.com/relaykit/responsesrelay/scheduler"
)

// OAuth tokens as the fake token endpoint issues them: distinctive, so
// that a leak is found by a substring search.
func oauthAccess(n int) string  { return fmt.Sprintf("at-%d-RELAYDACCESSCANARY-v5b6n7m8", n) }
func oauthRefresh(n int) string { return fmt.Sprintf("rt-%d-RELAYDREFRESHCANARY-a1s2d3f4", n) }

const oauthSecret = "cs-RELAYDCLIENTSECRETCANARY-z9x8"

// tokenEndpoint is a fake OAuth token endpoint that rotates refresh
// tokens: each refresh with the current one issues access token n and
// refresh token n. A refused refresh is answered the careless way, with
// the token it was sent quoted.
type tokenEndpoint struct {
	srv *httptest.Server

	mu       sync.Mutex
	issued   int
	refresh  string
	requests int
	hold     chan struct{} // when set, each request waits for it
	refuse   bool          // answer invalid_grant whatever is sent
}

func newTokenEndpoint(t *testing.T) *tokenEndpoint {
	te := &tokenEndpoint{refresh: oauthRefresh(0)}
	te.srv = httptest.NewServer(http.HandlerFunc(te.serve))
	t.Cleanup(te.srv.Close)
	return te
}

func (te *tokenEndpoint) serve(w http.ResponseWriter, r *http.Request) {
	r.ParseForm()
	te.mu.Lock()
	te.requests++
	hold := te.hold
	te.mu.Unlock()
	if hold != nil {
		<-hold
	}
	te.mu.Lock()
	defer te.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	id, secret, _ := r.BasicAuth()
	rt := r.PostForm.Get("refresh_token")
	if te.refuse || rt != te.refresh || id != "relayd-test" || secret != oauthSecret {
		w.WriteHeader(400)
		json.NewEncoder(w).Encode(map[string]string{"error": "invalid_grant", "error_description": "refresh token " + rt + " was revoked"})
		return
	}
	te.issued++
	te.refresh = oauthRefresh(te.issued)
	json.NewEncoder(w).Encode(map[string]any{"access_token": oauthAccess(te.issued), "token_type": "Bearer",
		"expires_in": 3600, "refresh_token": te.refresh})
}

func (te *tokenEndpoint) count() int {
	te.mu.Lock()
	defer te.mu.Unlock()
	return te.requests
}

// TestOAuthAccount: an oauth account next to an api_key one. 32 turns on
// its expired token cause one token request, whose rotated refresh token
// is in the file (0600) before the turns go upstream; an upstream 401 is
// answered by one refresh and a served retry; a refresh the endpoint
// refuses cools the account, the reason in /debug/accounts; a static
// key's 401 cools its account as before. No token or secret reaches a log
// line, an answer or the operator view.
func TestOAuthAccount(t *testing.T) {
	const n = 32
	te := newTokenEndpoint(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "oa.refresh")
	if err := os.WriteFile(file, []byte(oauthRefresh(0)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var up string
	e := newEnv(t, []string{"sk"}, func(c *Config) {
		c.AdminToken = adminToken
		c.APIKeys[0].Concurrency = 2 * n
		c.Accounts[0].Models = []string{"gpt-static"}
		up = c.Accounts[0].BaseURL
		c.Accounts = append(c.Accounts, AccountConfig{ID: "oa", BaseURL: strings.Replace(up, "/sk/", "/oa/", 1),
			Models: []string{"gpt-oauth"}, Concurrency: 2 * n,
			OAuth: &OAuthConfig{TokenURL: te.srv.URL + "/oauth/token", ClientID: "relayd-test", ClientSecret: oauthSecret, RefreshTokenFile: file}})
	})
	if e.cfg.Accounts[1].BaseURL != e.up.BaseURL("oa") {
		t.Fatalf("base url %s", e.cfg.Accounts[1].BaseURL)
	}
	e.up.SetKey("oa", oauthAccess(1))
	var (
		mu   sync.Mutex
		seen strings.Builder
	)
	turn := func(model string) int {
		req, _ := http.NewRequest(http.MethodPost, e.ts.URL+"/v1/responses",
			strings.NewReader(`{"model":"`+model+`","stream":true,"input":"hi"}`))
		req.Header.Set("Authorization", "Bearer "+keyAlice)
		resp, err := e.ts.Client().Do(req)
		if err != nil {
			t.Error(err)
			return 0
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		mu.Lock()
		fmt.Fprintf(&seen, "%d %v\n%s\n", resp.StatusCode, resp.Header, b)
		mu.Unlock()
		if resp.StatusCode == 200 && !strings.Contains(string(b), "response.completed") {
			return -1
		}
		return resp.StatusCode
	}

	// 32 turns find no access token: one refresh, held until all of them
	// hold their account slot.
	hold := make(chan struct{})
	release := sync.OnceFunc(func() { close(hold) })
	t.Cleanup(release) // before the endpoint closes, should the test fail
	te.mu.Lock()
	te.hold = hold
	te.mu.Unlock()
	var wg sync.WaitGroup
	statuses := make([]int, n)
	for i := range n {
		wg.Go(func() { statuses[i] = turn("gpt-oauth") })
	}
	relaytestenv.WaitUntil(t, "every turn to hold its account slot", func() bool {
		return relaytestenv.AccountInFlight(e.srv.sched, "oa") == n
	})
	te.mu.Lock()
	te.hold = nil
	te.mu.Unlock()
	release()
	wg.Wait()
	for i, s := range statuses {
		if s != 200 {
			t.Fatalf("turn %d: %d", i, s)
		}
	}
	if c := te.count(); c != 1 {
		t.Fatalf("%d token requests for %d turns", c, n)
	}
	checkTokenFile(t, file, oauthRefresh(1))

	// The static account next to it.
	if s := turn("gpt-static"); s != 200 {
		t.Fatalf("static account: %d", s)
	}

	// The upstream now refuses the access token: one refresh, one retry.
	e.up.SetKey("oa", oauthAccess(2))
	if s := turn("gpt-oauth"); s != 200 || te.count() != 2 {
		t.Fatalf("after a 401: %d, %d token requests", s, te.count())
	}
	checkTokenFile(t, file, oauthRefresh(2))

	// The endpoint refuses the refresh: the account cools down, and the
	// operator sees why.
	te.mu.Lock()
	te.refuse = true
	te.mu.Unlock()
	e.up.SetKey("oa", oauthAccess(99))
	if s := turn("gpt-oauth"); s == 200 || te.count() != 3 {
		t.Fatalf("after a refused refresh: %d, %d token requests", s, te.count())
	}
	checkTokenFile(t, file, oauthRefresh(2))
	// A static key that the upstream refuses cannot be renewed.
	e.up.SetKey("sk", "sk-something-else-entirely")
	if s := turn("gpt-static"); s == 200 {
		t.Fatalf("static account with a refused key: %d", s)
	}
	_, view := e.getAdmin("/debug/accounts", adminToken)
	detail := func(id string) string {
		return gjson.GetBytes(view, `accounts.#(id=="`+id+`").cooling_detail`).String()
	}
	if got := detail("oa"); got != `401: the upstream rejected the credentials; credential refresh failed: oauthcreds: refreshing the token of account "oa": the token endpoint answered 400 invalid_grant` {
		t.Fatalf("oa detail %q\n%s", got, view)
	}
	if got := detail("sk"); !strings.Contains(got, "static api_key") {
		t.Fatalf("sk detail %q", got)
	}

	out := seen.String() + string(view) + e.logs.String()
	for _, secret := range []string{oauthAccess(1), oauthAccess(2), oauthAccess(99), oauthRefresh(0), oauthRefresh(1), oauthRefresh(2),
		"ACCESSCANARY", "REFRESHCANARY", "CLIENTSECRETCANARY", upstreamKey("sk")} {
		if i := strings.Index(out, secret); i >= 0 {
			t.Fatalf("%q leaked:\n...%s...", secret, out[max(0, i-200):min(len(out), i+200)])
		}
	}
	if !strings.Contains(e.logs.String(), "relayd: stored a rotated refresh token") {
		t.Fatal("no log line for the stored token")
	}
}

// checkTokenFile: the file holds want, mode 0600, and no temporary file
// is left beside it.
func checkTokenFile(t *testing.T, file, want string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil || strings.TrimSpace(string(b)) != want {
		t.Fatalf("token file %q, %v; want %q", b, err, want)
	}
	fi, err := os.Stat(file)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode %v, %v", fi.Mode(), err)
	}
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(file), ".*.tmp-*"))
	if len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

// A refresh token file that cannot be read stops relayd at start, and
// the error names the file, not its content.
func TestOAuthTokenFileErrors(t *testing.T) {
	dir := t.TempDir()
	blank := filepath.Join(dir, "blank")
	os.WriteFile(blank, []byte(" \n"), 0o600)
	two := filepath.Join(dir, "two")
	os.WriteFile(two, []byte(oauthRefresh(0)+"\n"+oauthRefresh(1)+"\n"), 0o600)
	for _, c := range []struct{ file, want string }{
		{filepath.Join(dir, "missing"), "no such file"},
		{blank, "is empty"},
		{two, "holds more than one token"},
	} {
		acct := AccountConfig{ID: "oa", OAuth: &OAuthConfig{TokenURL: "https://auth.example/oauth/token", ClientID: "c", RefreshTokenFile: c.file}}
		_, err := buildCredentials([]AccountConfig{acct}, nil, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "account oa") || strings.Contains(err.Error(), "CANARY") {
			t.Fatalf("%s: %v", c.file, err)
		}
	}
	// Without oauth accounts the static keys are the credentials as they
	// are: the relay's fast path.
	creds, err := buildCredentials([]AccountConfig{{ID: "a", APIKey: "k"}}, map[string]string{"a": "k"}, nil)
	if _, static := creds.(scheduler.StaticKeys); err != nil || !static {
		t.Fatalf("%T %v", creds, err)
	}
}
