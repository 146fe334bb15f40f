package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/relaykit/responsesrelay/scheduler"
)

const adminToken = "admin-test-0123456789abcdef"

func (e *env) getAdmin(path, token string) (*http.Response, []byte) {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.ts.URL+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return e.do(req)
}

// TestAdminRefusesBadTokens: the operator endpoints answer nothing about
// the pool without the admin token; a client key is not an admin token.
func TestAdminRefusesBadTokens(t *testing.T) {
	e := newEnv(t, []string{"a1"}, func(c *Config) { c.AdminToken = adminToken })
	for _, path := range []string{"/debug/accounts", "/debug/keys", "/metrics"} {
		for _, c := range []struct {
			token  string
			status int
		}{{"", 401}, {"wrong-token-0123456789", 403}, {keyAlice, 403}, {adminToken + "x", 403}, {adminToken[:len(adminToken)-1], 403}} {
			resp, b := e.getAdmin(path, c.token)
			if resp.StatusCode != c.status || strings.Contains(string(b), "a1") || !json.Valid(b) {
				t.Fatalf("%s with %q: %d %s", path, c.token, resp.StatusCode, b)
			}
		}
		if resp, b := e.getAdmin(path, adminToken); resp.StatusCode != 200 {
			t.Fatalf("%s with the admin token: %d %s", path, resp.StatusCode, b)
		}
	}
	if strings.Contains(e.logs.String(), adminToken) {
		t.Fatal("the admin token is in the logs")
	}
}

// TestAdminDisabledWithoutToken: no admin_token, no operator endpoints.
func TestAdminDisabledWithoutToken(t *testing.T) {
	e := newEnv(t, []string{"a1"}, nil)
	for _, path := range []string{"/debug/accounts", "/debug/keys", "/metrics"} {
		if resp, b := e.getAdmin(path, "anything-0123456789"); resp.StatusCode != 404 || strings.Contains(string(b), "a1") {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, b)
		}
	}
}

// TestAdminAccounts: /debug/accounts lists every configured account
// before its first turn, then shows a cooldown after a 429.
func TestAdminAccounts(t *testing.T) {
	e := newEnv(t, []string{"a1", "a2"}, func(c *Config) {
		c.AdminToken = adminToken
		c.Accounts[0].Concurrency, c.Accounts[0].Priority = 3, 0
		c.Accounts[1].Concurrency, c.Accounts[1].Priority = 5, 1
	})
	resp, b := e.getAdmin("/debug/accounts", adminToken)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	var v accountsView
	if err := json.Unmarshal(b, &v); err != nil || len(v.Accounts) != 2 {
		t.Fatalf("%v: %s", err, b)
	}
	if a := v.Accounts[0]; a.ID != "a1" || a.Limit != 3 || a.InFlight != 0 || len(a.Groups) != 1 || a.Groups[0] != "default" {
		t.Fatalf("a1: %+v", a)
	}
	e.up.Script("a1", relaytest.Step{Status: 429, Header: http.Header{"Retry-After": {"30"}}})
	if resp, b := e.post(`{"model":"gpt-5","input":"hi"}`, "Authorization", "Bearer "+keyAlice); resp.StatusCode != 200 {
		t.Fatalf("turn: %d %s", resp.StatusCode, b)
	}
	_, b = e.getAdmin("/debug/accounts", adminToken)
	a1 := gjson.GetBytes(b, `accounts.#(id=="a1")`)
	if a1.Get("cooling_reason").String() != scheduler.EventRateLimited || a1.Get("last_status").Int() != 429 || !a1.Get("cooling_until").Exists() {
		t.Fatalf("a1 after a 429: %s", a1.Raw)
	}
	if a2 := gjson.GetBytes(b, `accounts.#(id=="a2")`); a2.Get("last_status").Int() != 200 || a2.Get("cooling_until").Exists() {
		t.Fatalf("a2: %s", a2.Raw)
	}
	for _, secret := range []string{upstreamKey("a1"), upstreamKey("a2"), keyAlice} {
		if strings.Contains(string(b), secret) {
			t.Fatal("a key is in /debug/accounts")
		}
	}
}

// TestAdminMetrics: /metrics counts turns, failovers and account events.
func TestAdminMetrics(t *testing.T) {
	e := newEnv(t, []string{"a1", "a2"}, func(c *Config) {
		c.AdminToken = adminToken
		c.Accounts[0].Priority, c.Accounts[1].Priority = 0, 1
	})
	e.up.Script("a1", relaytest.Step{Status: 429, Header: http.Header{"Retry-After": {"30"}}})
	if resp, b := e.post(`{"model":"gpt-5","input":"hi","stream":true}`, "Authorization", "Bearer "+keyAlice); resp.StatusCode != 200 {
		t.Fatalf("turn: %d %s", resp.StatusCode, b)
	}
	e.srv.relay.Shutdown(t.Context())
	_, b := e.getAdmin("/metrics", adminToken)
	text := string(b)
	for _, want := range []string{
		`responsesrelay_turns_total{code_class="2xx",model="gpt-5",status="completed",transport="http"} 1`,
		`responsesrelay_failovers_total{account="a1",reason="status"} 1`,
		`responsesrelay_account_events_total{account="a1",kind="rate_limited"} 1`,
		`go_goroutines`,
	} {
		if !strings.Contains(text, want) {
			t.Fatalf("no %q in /metrics:\n%s", want, text)
		}
	}
	if strings.Contains(text, "alice") {
		t.Fatal("a user id is a metric label")
	}
}

func TestConfigAdminToken(t *testing.T) {
	for _, c := range []struct {
		token, want string
	}{
		{"short", "admin_token: at least 16 characters"},
		{keyAlice, "admin_token: must differ from api_keys[0].key"},
	} {
		cfg := Config{APIKeys: []APIKeyConfig{{Key: keyAlice, UserID: "alice"}},
			Accounts:   []AccountConfig{{ID: "a", BaseURL: "http://127.0.0.1:1/v1", APIKey: "sk-a"}},
			AdminToken: c.token}
		cfg.applyDefaults()
		if err := cfg.validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%q: %v", c.token, err)
		}
	}
}

// /debug/keys lists every key by its id, never the key: its quotas, and
// with a ledger its balance in the current period.
func TestAdminKeys(t *testing.T) {
	e := newEnv(t, []string{"a1"}, func(c *Config) { c.AdminToken = adminToken })
	resp, b := e.getAdmin("/debug/keys", adminToken)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" ||
		gjson.GetBytes(b, "ledger").String() != "" || gjson.GetBytes(b, "keys.#").Int() != 2 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	alice := gjson.GetBytes(b, "keys.0")
	if alice.Get("user_id").String() != "alice" || !strings.HasPrefix(alice.Get("api_key_id").String(), "key-") ||
		alice.Get("spent_micros").Exists() || alice.Get("remaining_micros").Type != gjson.Null {
		t.Fatalf("alice without a ledger: %s", alice.Raw)
	}

	e = newEnv(t, []string{"a1"}, func(c *Config) {
		c.AdminToken = adminToken
		c.Prices = map[string]PriceConfig{"gpt-5": {Input: "1", Output: "10"}}
		c.APIKeys[0].Budget = &BudgetConfig{USD: "2.5", Period: "day"}
		c.APIKeys[0].RPM = 100
	})
	if resp, b := e.post(`{"model":"gpt-5","input":"spend"}`, "Authorization", "Bearer "+keyAlice); resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	spent := e.waitSettled(keyAlice)
	day := func() string { return time.Now().UTC().Format("2006-01-02") }
	before := day()
	_, b = e.getAdmin("/debug/keys", adminToken)
	after := day()
	alice = gjson.GetBytes(b, "keys.0")
	if gjson.GetBytes(b, "ledger").String() != ledgerSQLite || alice.Get("budget_micros").Int() != 2_500_000 ||
		alice.Get("period").String() != "day" || alice.Get("rpm").Int() != 100 || alice.Get("holds").Int() != 0 ||
		spent <= 0 || alice.Get("remaining_micros").Int() != 2_500_000-spent ||
		(alice.Get("window").String() != before && alice.Get("window").String() != after) {
		t.Fatalf("alice: %s", alice.Raw)
	}
	if bob := gjson.GetBytes(b, "keys.1"); bob.Get("spent_micros").Int() != 0 || bob.Get("remaining_micros").Type != gjson.Null ||
		bob.Get("window").String() != "total" {
		t.Fatalf("bob: %s", bob.Raw)
	}
	for _, secret := range []string{keyAlice, keyBob} {
		if strings.Contains(string(b), secret) {
			t.Fatal("a key is in /debug/keys")
		}
	}
}
