package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/relay/relaytest"
)

// The config of the README, field for field.
const fullConfig = `{
  "listen": "127.0.0.1:9090",
  "accounts": [
    {"id": "a1", "group": "default", "base_url": "https://api.openai.com/v1", "api_key": "sk-full-config-secret-a1",
     "models": ["gpt-*"], "model_map": {"gpt-5": "gpt-5.5"}, "concurrency": 4, "priority": 0,
     "weight": 1, "websocket": false, "headers": {"chatgpt-account-id": "acct-123"}},
    {"id": "a2", "group": "team", "base_url": "http://10.0.0.2:8000/v1", "api_key": "sk-full-config-secret-a2",
     "priority": 1, "weight": 3, "websocket": true},
    {"id": "a3", "group": "team", "base_url": "https://chatgpt.example/backend-api/codex",
     "oauth": {"token_url": "https://auth.example/oauth/token", "client_id": "app_123",
               "client_secret": "", "refresh_token_file": "/var/lib/relayd/a3.refresh"}}
  ],
  "api_keys": [
    {"key": "rk-full-1", "user_id": "u1", "group": "default", "concurrency": 2,
     "budget": {"usd": 5.0, "period": "month"}, "rpm": 60, "tpm": 200000},
    {"key": "rk-full-2", "user_id": "u2", "group": "team"}
  ],
  "usage": {"driver": "sqlite", "dsn": "/var/lib/relayd/usage.db", "spool": "/var/lib/relayd/spool"},
  "conversations": {"driver": "memory", "dsn": "", "ttl": "12h", "max_bytes": 134217728},
  "ws_max_conns_per_key": 8,
  "redis": "",
  "redis_slot_linger": "",
  "prices": {"gpt-5": {"input": 1.25, "cached_input": 0.125, "output": 10}, "gpt-5-mini*": {"input": 0.25, "output": 2}},
  "prices_file": "",
  "refuse_unpriced": true
}`

func TestParseConfigFull(t *testing.T) {
	cfg, err := parseConfig([]byte(fullConfig))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Listen: "127.0.0.1:9090",
		Accounts: []AccountConfig{
			{ID: "a1", Group: "default", BaseURL: "https://api.openai.com/v1", APIKey: "sk-full-config-secret-a1",
				Models: []string{"gpt-*"}, ModelMap: map[string]string{"gpt-5": "gpt-5.5"}, Concurrency: 4,
				Weight: 1, Headers: map[string]string{"chatgpt-account-id": "acct-123"}},
			{ID: "a2", Group: "team", BaseURL: "http://10.0.0.2:8000/v1", APIKey: "sk-full-config-secret-a2",
				Priority: 1, Weight: 3, WebSocket: true},
			{ID: "a3", Group: "team", BaseURL: "https://chatgpt.example/backend-api/codex",
				OAuth: &OAuthConfig{TokenURL: "https://auth.example/oauth/token", ClientID: "app_123", RefreshTokenFile: "/var/lib/relayd/a3.refresh"}},
		},
		APIKeys: []APIKeyConfig{
			{Key: "rk-full-1", UserID: "u1", Group: "default", Concurrency: 2,
				Budget: &BudgetConfig{USD: "5.0", Period: "month"}, RPM: 60, TPM: 200000},
			{Key: "rk-full-2", UserID: "u2", Group: "team"},
		},
		Usage:            UsageConfig{Driver: "sqlite", DSN: "/var/lib/relayd/usage.db", Spool: "/var/lib/relayd/spool"},
		Conversations:    ConversationsConfig{Driver: "memory", TTL: "12h", MaxBytes: 128 << 20},
		WSMaxConnsPerKey: 8,
		Prices: map[string]PriceConfig{
			"gpt-5":       {Input: "1.25", CachedInput: "0.125", Output: "10"},
			"gpt-5-mini*": {Input: "0.25", Output: "2"},
		},
		RefuseUnpriced: true,
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("parsed\n%+v\nwant\n%+v", cfg, want)
	}

	pool, creds := buildPool(cfg.Accounts)
	accts, _ := pool.Accounts(t.Context(), "default")
	if len(accts) != 1 || accts[0].ID != "a1" || accts[0].Header.Get("chatgpt-account-id") != "acct-123" ||
		accts[0].ModelMap["gpt-5"] != "gpt-5.5" || !accts[0].Serves("gpt-4.1") || accts[0].Serves("o3") {
		t.Fatalf("group default = %+v", accts)
	}
	team, _ := pool.Accounts(t.Context(), "team")
	if len(team) != 2 || team[0].ID != "a2" || !team[0].WebSocket || team[0].Weight != 3 || team[0].Priority != 1 || team[1].ID != "a3" {
		t.Fatalf("group team = %+v", team)
	}
	if tok, err := creds.Token(t.Context(), team[0]); err != nil || tok != "sk-full-config-secret-a2" {
		t.Fatalf("credentials for a2 = %q, %v", tok, err)
	}
	if _, ok := creds["a3"]; ok {
		t.Fatal("the oauth account has a static key")
	}
}

func TestParseConfigDefaults(t *testing.T) {
	cfg, err := parseConfig([]byte(`{
		"accounts": [{"id": "a1", "base_url": "https://api.openai.com/v1", "api_key": "sk-x"}],
		"api_keys": [{"key": "rk-x", "user_id": "u1"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:8080" {
		t.Errorf("listen = %q", cfg.Listen)
	}
	if cfg.Accounts[0].Group != "default" || cfg.APIKeys[0].Group != "default" {
		t.Errorf("groups = %q, %q; want default", cfg.Accounts[0].Group, cfg.APIKeys[0].Group)
	}
	if cfg.Usage != (UsageConfig{Driver: "sqlite", DSN: "usage.db"}) {
		t.Errorf("usage = %+v", cfg.Usage)
	}
	if cfg.Conversations != (ConversationsConfig{Driver: "memory", TTL: "24h", MaxBytes: 256 << 20}) {
		t.Errorf("conversations = %+v", cfg.Conversations)
	}
	if cfg.APIKeys[0].Concurrency != 0 || cfg.Accounts[0].Concurrency != 0 {
		t.Error("concurrency should stay 0 (unlimited)")
	}
	if cfg.WSMaxConnsPerKey != 0 {
		t.Errorf("ws_max_conns_per_key = %d, want 0 (the relay's default cap)", cfg.WSMaxConnsPerKey)
	}
	off, err := parseConfig([]byte(`{
		"accounts": [{"id": "a1", "base_url": "https://api.openai.com/v1", "api_key": "sk-x"}],
		"api_keys": [{"key": "rk-x", "user_id": "u1"}], "ws_max_conns_per_key": -1}`))
	if err != nil || off.WSMaxConnsPerKey != -1 {
		t.Errorf("ws_max_conns_per_key -1 (no cap): %d, %v", off.WSMaxConnsPerKey, err)
	}
}

// PostgreSQL: the DSN is required (no default), and logs name the server
// without the password, whether the DSN is a URL or key=value pairs.
func TestParseConfigPostgres(t *testing.T) {
	const base = `"accounts": [{"id": "a1", "base_url": "https://x/v1", "api_key": "sk-x"}], "api_keys": [{"key": "rk-x", "user_id": "u1"}]`
	for _, c := range []struct{ dsn, want string }{
		{"postgres://relayd:pw-secret-1@db.internal:6432/billing?sslmode=require", "postgres relayd@db.internal:6432/billing"},
		{"host=10.0.0.5 user=relayd password=pw-secret-1 dbname=usage", "postgres relayd@10.0.0.5:5432/usage"},
	} {
		cfg, err := parseConfig([]byte(`{` + base + `, "usage": {"driver": "postgres", "dsn": "` + c.dsn + `"}}`))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Usage.DSN != c.dsn || cfg.Usage.Spool != "" {
			t.Fatalf("usage = %+v", cfg.Usage)
		}
		if got := cfg.Usage.describe(); got != c.want {
			t.Errorf("describe(%q) = %q, want %q", c.dsn, got, c.want)
		}
	}
	if got := (UsageConfig{Driver: "postgres", DSN: "postgres://u:pw-secret-1@h:bad/"}).describe(); strings.Contains(got, "secret") {
		t.Errorf("describe of a bad DSN = %q", got)
	}
}

func TestParseConfigUnknownFieldIsNamed(t *testing.T) {
	const acct = `{"id": "a1", "base_url": "https://x/v1", "api_key": "sk-x"}`
	const key = `{"key": "rk-x", "user_id": "u1"}`
	cases := []struct{ name, doc, want string }{
		{"top level", `{"listne": "x", "accounts": [` + acct + `], "api_keys": [` + key + `]}`,
			`unknown field "listne" at listne`},
		{"in an account", `{"accounts": [` + acct + `, {"id": "a2", "base_url": "https://x/v1", "api_kye": "sk"}], "api_keys": [` + key + `]}`,
			`unknown field "api_kye" at accounts[1].api_kye`},
		{"in a key", `{"accounts": [` + acct + `], "api_keys": [{"key": "rk", "user": "u1"}]}`,
			`unknown field "user" at api_keys[0].user`},
		{"in usage", `{"accounts": [` + acct + `], "api_keys": [` + key + `], "usage": {"drvier": "sqlite"}}`,
			`unknown field "drvier" at usage.drvier`},
		{"in conversations", `{"accounts": [` + acct + `], "api_keys": [` + key + `], "conversations": {"max_byte": 1}}`,
			`unknown field "max_byte" at conversations.max_byte`},
		{"spool misspelt", `{"accounts": [` + acct + `], "api_keys": [` + key + `], "usage": {"spol": "/tmp/s"}}`,
			`unknown field "spol" at usage.spol`},
		{"WebSocket cap misspelt", `{"accounts": [` + acct + `], "api_keys": [` + key + `], "ws_max_conn_per_key": 2}`,
			`unknown field "ws_max_conn_per_key" at ws_max_conn_per_key`},
		{"in a price", `{"accounts": [` + acct + `], "api_keys": [` + key + `], "prices": {"gpt-5": {"input": 1, "output": 2}, "o3": {"inptu": 1}}}`,
			`unknown field "inptu" at prices["o3"].inptu`},
		{"in a budget", `{"accounts": [` + acct + `], "api_keys": [{"key": "rk", "user_id": "u1", "budget": {"dollars": 5}}]}`,
			`unknown field "dollars" at api_keys[0].budget.dollars`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := parseConfig([]byte(c.doc))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error = %v, want it to contain %q", err, c.want)
			}
		})
	}
}

func TestParseConfigErrors(t *testing.T) {
	const key = `"api_keys": [{"key": "rk-secret-value-1", "user_id": "u1"}]`
	const acct = `{"id": "a1", "base_url": "https://api.openai.com/v1", "api_key": "sk-secret-value-a1"}`
	cases := []struct{ name, doc, want string }{
		{"missing id", `{"accounts": [{"base_url": "https://x/v1", "api_key": "sk-secret-value-a1"}], ` + key + `}`,
			"accounts[0]: id is required"},
		{"missing base_url", `{"accounts": [{"id": "a1", "api_key": "sk-secret-value-a1"}], ` + key + `}`,
			"accounts[0] (a1): base_url is required"},
		{"bad base_url", `{"accounts": [{"id": "a1", "base_url": "api.openai.com", "api_key": "k"}], ` + key + `}`,
			`base_url "api.openai.com" is not an http(s) URL`},
		{"base_url with credentials", `{"accounts": [{"id": "a1", "base_url": "https://u:pw@x/v1", "api_key": "k"}], ` + key + `}`,
			"base_url must not carry credentials"},
		// A password with '/' and '@' does not parse; the quoted URL
		// must not carry it anyway.
		{"unparsable base_url with password", `{"accounts": [{"id": "a1", "base_url": "https://u:sk-secret-value-a1/x@y@h:port/v1", "api_key": "k"}], ` + key + `}`,
			`base_url "https://xxxxx@h:port/v1" is not an http(s) URL`},
		{"base_url with password and a bad scheme", `{"accounts": [{"id": "a1", "base_url": "ftp://u:sk-secret-value-a1@h/v1", "api_key": "k"}], ` + key + `}`,
			`base_url "ftp://xxxxx@h/v1" is not an http(s) URL`},
		{"base_url with password and no scheme", `{"accounts": [{"id": "a1", "base_url": "u:sk-secret-value-a1@h/v1", "api_key": "k"}], ` + key + `}`,
			`base_url "xxxxx@h/v1" is not an http(s) URL`},
		{"missing api_key and oauth", `{"accounts": [{"id": "a1", "base_url": "https://x/v1"}], ` + key + `}`,
			"accounts[0] (a1): api_key or oauth is required"},
		{"api_key and oauth", `{"accounts": [{"id": "a1", "base_url": "https://x/v1", "api_key": "sk-secret-value-a1",
			"oauth": {"token_url": "https://auth.example/oauth/token", "client_id": "c", "refresh_token_file": "a1.rt"}}], ` + key + `}`,
			"accounts[0] (a1): api_key and oauth exclude each other; keep one"},
		{"oauth fields", `{"accounts": [{"id": "a1", "base_url": "https://x/v1", "oauth": {}}], ` + key + `}`,
			"accounts[0] (a1): oauth.token_url is required\naccounts[0] (a1): oauth.client_id is required\naccounts[0] (a1): oauth.refresh_token_file is required"},
		{"oauth token_url", `{"accounts": [{"id": "a1", "base_url": "https://x/v1",
			"oauth": {"token_url": "https://u:sk-secret-value-a1@auth/token", "client_id": "c", "refresh_token_file": "a1.rt"}}], ` + key + `}`,
			"accounts[0] (a1): oauth.token_url must not carry credentials; use client_id and client_secret"},
		{"oauth token_url scheme", `{"accounts": [{"id": "a1", "base_url": "https://x/v1",
			"oauth": {"token_url": "auth.example/token", "client_id": "c", "refresh_token_file": "a1.rt"}}], ` + key + `}`,
			`oauth.token_url "auth.example/token" is not an http(s) URL`},
		{"oauth shared token file", `{"accounts": [
			{"id": "a1", "base_url": "https://x/v1", "oauth": {"token_url": "https://auth/t", "client_id": "c", "refresh_token_file": "/s/rt"}},
			{"id": "a2", "base_url": "https://x/v1", "oauth": {"token_url": "https://auth/t", "client_id": "c", "refresh_token_file": "/s/../s/rt"}}], ` + key + `}`,
			"accounts[1] (a2): oauth.refresh_token_file is also accounts[0]'s; each account needs its own"},
		{"oauth misspelt", `{"accounts": [{"id": "a1", "base_url": "https://x/v1", "oauth": {"token_uri": "https://auth/t"}}], ` + key + `}`,
			`unknown field "token_uri" at accounts[0].oauth.token_uri`},
		{"duplicate account", `{"accounts": [` + acct + `,` + acct + `], ` + key + `}`,
			`accounts[1]: duplicate id "a1" (also accounts[0])`},
		{"duplicate key", `{"accounts": [` + acct + `], "api_keys": [{"key": "rk-secret-value-1", "user_id": "u1"}, {"key": "rk-secret-value-1", "user_id": "u2"}]}`,
			"api_keys[1]: duplicate key (the same as api_keys[0])"},
		{"missing key", `{"accounts": [` + acct + `], "api_keys": [{"user_id": "u1"}]}`,
			"api_keys[0]: key is required"},
		{"missing user", `{"accounts": [` + acct + `], "api_keys": [{"key": "rk-secret-value-1"}]}`,
			"api_keys[0]: user_id is required"},
		{"group without accounts", `{"accounts": [` + acct + `], "api_keys": [{"key": "rk-secret-value-1", "user_id": "u1", "group": "vip"}]}`,
			`api_keys[0]: group "vip" has no accounts`},
		{"no accounts", `{` + key + `}`, "accounts: at least one upstream account is required"},
		{"no keys", `{"accounts": [` + acct + `]}`, "api_keys: at least one client key is required"},
		{"redis scheme", `{"accounts": [` + acct + `], ` + key + `, "redis": "http://u:sk-secret-value-a1@127.0.0.1:6379"}`,
			"redis: invalid URL (redis: invalid URL scheme: http); want one like redis://127.0.0.1:6379/0"},
		{"redis port", `{"accounts": [` + acct + `], ` + key + `, "redis": "redis://u:sk-secret-value-a1@127.0.0.1:port/0"}`,
			`redis: invalid URL (invalid port ":port" after host)`},
		{"redis db", `{"accounts": [` + acct + `], ` + key + `, "redis": "redis://u:sk-secret-value-a1@127.0.0.1:6379/zero"}`,
			`redis: invalid URL (redis: invalid database number: "zero")`},
		{"slot linger without redis", `{"accounts": [` + acct + `], ` + key + `, "redis_slot_linger": "50ms"}`,
			"redis_slot_linger: used with redis only"},
		{"slot linger not a duration", `{"accounts": [` + acct + `], ` + key + `, "redis": "redis://127.0.0.1:6379/0", "redis_slot_linger": "50"}`,
			`redis_slot_linger: "50" is not a duration like "50ms"`},
		{"slot linger negative", `{"accounts": [` + acct + `], ` + key + `, "redis": "redis://127.0.0.1:6379/0", "redis_slot_linger": "-1ms"}`,
			`redis_slot_linger: "-1ms" must be between 0s and 1m`},
		{"slot linger too long", `{"accounts": [` + acct + `], ` + key + `, "redis": "redis://127.0.0.1:6379/0", "redis_slot_linger": "2m"}`,
			`redis_slot_linger: "2m" must be between 0s and 1m`},
		{"driver", `{"accounts": [` + acct + `], ` + key + `, "usage": {"driver": "mysql", "dsn": "x"}}`,
			`usage.driver: "mysql" is not supported; use "sqlite" or "postgres"`},
		{"postgres without dsn", `{"accounts": [` + acct + `], ` + key + `, "usage": {"driver": "postgres"}}`,
			`usage.dsn: required with driver "postgres"`},
		{"conversations driver", `{"accounts": [` + acct + `], ` + key + `, "conversations": {"driver": "mysql"}}`,
			`conversations.driver: "mysql" is not supported; use "memory", "sqlite", "postgres", "redis" or "off"`},
		{"conversations ttl", `{"accounts": [` + acct + `], ` + key + `, "conversations": {"ttl": "1 day"}}`,
			`conversations.ttl: "1 day" is not a duration like "24h" or "90m"`},
		{"conversations ttl zero", `{"accounts": [` + acct + `], ` + key + `, "conversations": {"ttl": "0s"}}`,
			`conversations.ttl: "0s" must be positive`},
		{"conversations ttl negative", `{"accounts": [` + acct + `], ` + key + `, "conversations": {"driver": "redis", "dsn": "redis://h:6379/0", "ttl": "-1h"}}`,
			`conversations.ttl: "-1h" must be positive`},
		{"conversations max_bytes negative", `{"accounts": [` + acct + `], ` + key + `, "conversations": {"max_bytes": -1}}`,
			`conversations.max_bytes: must not be negative; use "driver": "off" to keep no records`},
		{"conversations max_bytes with sqlite", `{"accounts": [` + acct + `], ` + key + `, "conversations": {"driver": "sqlite", "max_bytes": 1024}}`,
			`conversations.max_bytes: used by driver "memory" only; the sqlite records are bounded by ttl`},
		{"conversations max_bytes type", `{"accounts": [` + acct + `], ` + key + `, "conversations": {"max_bytes": "256MiB"}}`,
			`field "conversations.max_bytes"`},
		{"conversations dsn with memory", `{"accounts": [` + acct + `], ` + key + `, "conversations": {"dsn": "x.db"}}`,
			`conversations.dsn: not used with driver "memory"`},
		{"conversations postgres without dsn", `{"accounts": [` + acct + `], ` + key + `, "conversations": {"driver": "postgres"}}`,
			`conversations.dsn: required with driver "postgres" unless usage is in PostgreSQL`},
		{"conversations redis without dsn", `{"accounts": [` + acct + `], ` + key + `, "conversations": {"driver": "redis"}}`,
			`conversations.dsn: required with driver "redis" unless redis is set`},
		{"conversations redis url", `{"accounts": [` + acct + `], ` + key + `, "conversations": {"driver": "redis", "dsn": "http://u:sk-secret-value-a1@h:6379"}}`,
			"conversations.dsn: invalid URL (redis: invalid URL scheme: http)"},
		{"blank spool", `{"accounts": [` + acct + `], ` + key + `, "usage": {"spool": " "}}`,
			`usage.spool: " " is not a directory name`},
		{"listen", `{"listen": "8080", "accounts": [` + acct + `], ` + key + `}`,
			`listen: "8080" is not host:port`},
		{"bad model pattern", `{"accounts": [{"id": "a1", "base_url": "https://x/v1", "api_key": "k", "models": ["gpt-["]}], ` + key + `}`,
			`models: "gpt-[" is not a model name or pattern`},
		{"bad header", `{"accounts": [{"id": "a1", "base_url": "https://x/v1", "api_key": "k", "headers": {"bad header": "v"}}], ` + key + `}`,
			`headers: "bad header" is not a valid header name`},
		{"negative concurrency", `{"accounts": [` + acct + `], "api_keys": [{"key": "rk-secret-value-1", "user_id": "u1", "concurrency": -1}]}`,
			"api_keys[0]: concurrency must not be negative"},
		{"type error", `{"accounts": [{"id": "a1", "base_url": "https://x/v1", "api_key": "k", "concurrency": "4"}], ` + key + `}`,
			`field "accounts.concurrency" (line 1, column`},
		{"syntax error", "{\n  \"listen\": \"x\",\n  \"accounts\": [,]\n}", "invalid JSON at line 3, column"},
		{"trailing data", `{"accounts": [` + acct + `], ` + key + `} {}`, "unexpected data after the top-level JSON object"},
		{"empty", ``, "the file is empty"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := parseConfig([]byte(c.doc))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error = %v\nwant it to contain %q", err, c.want)
			}
			for _, secret := range []string{"rk-secret-value-1", "sk-secret-value-a1", "pw@"} {
				if strings.Contains(err.Error(), secret) {
					t.Fatalf("error quotes a secret: %v", err)
				}
			}
		})
	}
}

// Several problems are reported together, one per line.
func TestParseConfigReportsEveryProblem(t *testing.T) {
	_, err := parseConfig([]byte(`{"accounts": [{"id": "a1"}], "api_keys": [{"key": "rk"}]}`))
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	for _, want := range []string{"base_url is required", "api_key or oauth is required", "user_id is required"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if n := strings.Count(err.Error(), "\n"); n != 2 {
		t.Errorf("want 3 lines, got:\n%v", err)
	}
}

func TestLoadConfigNamesTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "relayd.json")
	if err := os.WriteFile(path, []byte(`{"acounts": []}`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := loadConfig(path)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), `unknown field "acounts"`) {
		t.Fatalf("error = %v", err)
	}
	_, err = loadConfig(filepath.Join(t.TempDir(), "missing.json"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"-config", "c.json", "-addr", "127.0.0.1:0", "-db", "u.db",
		"-log-level", "debug", "-shutdown-timeout", "5s"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := options{config: "c.json", addr: "127.0.0.1:0", db: "u.db", logLevel: slog.LevelDebug, shutdownTimeout: 5 * time.Second}
	if o != want {
		t.Fatalf("options = %+v, want %+v", o, want)
	}
	o, err = parseFlags(nil, io.Discard)
	if err != nil || o.config != "" || o.logLevel != slog.LevelInfo || o.shutdownTimeout != time.Minute {
		t.Fatalf("defaults = %+v, %v", o, err)
	}
	if _, err := parseFlags([]string{"-nope"}, io.Discard); err == nil {
		t.Fatal("unknown flag accepted")
	}
	if _, err := parseFlags([]string{"extra"}, io.Discard); err == nil {
		t.Fatal("positional argument accepted")
	}
}

// A config error ends run with exit code 1 and a plain message on stderr.
func TestRunRejectsBadConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "relayd.json")
	if err := os.WriteFile(path, []byte(`{"accounts": [{"id": "a1", "base_url": "https://x/v1", "api_key": "sk-run-secret-1"}], `+
		`"api_keys": [{"key": "rk-run-secret-2", "user_id": "u"}], "redis": "redis://u:run-secret-3@localhost:port/0"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	code := run(t.Context(), []string{"-config", path}, io.Discard, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "redis: invalid URL") {
		t.Fatalf("code %d, stderr %q", code, stderr.String())
	}
	if strings.Contains(stderr.String(), "secret") {
		t.Fatalf("stderr quotes a key: %q", stderr.String())
	}
}

// relayd -config FILE -addr ADDR: the file's accounts and keys serve, and
// -addr wins over "listen" (which here names a port already taken).
func TestRunConfigFileWithAddrOverride(t *testing.T) {
	up := relaytest.NewServer()
	defer up.Close()
	up.SetKey("a1", upstreamKey("a1"))
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	dir := t.TempDir()
	doc, _ := json.Marshal(map[string]any{
		"listen": taken.Addr().String(),
		"accounts": []map[string]any{{"id": "a1", "base_url": up.BaseURL("a1"), "api_key": upstreamKey("a1"),
			"models": []string{"gpt-*"}, "concurrency": 2}},
		"api_keys": []map[string]any{{"key": keyAlice, "user_id": "alice", "concurrency": 1}},
		"usage":    map[string]any{"driver": "sqlite", "dsn": filepath.Join(dir, "usage.db")},
		"redis":    "",
	})
	path := filepath.Join(dir, "relayd.json")
	if err := os.WriteFile(path, doc, 0o600); err != nil {
		t.Fatal(err)
	}

	stderr := newLogBuffer()
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	exit := make(chan int, 1)
	go func() { exit <- run(ctx, []string{"-config", path, "-addr", "127.0.0.1:0"}, io.Discard, stderr) }()
	logs := stderr.waitFor(t, "relayd: listening")
	m := regexp.MustCompile(`relayd: listening" addr=(\S+)`).FindStringSubmatch(logs)
	if m == nil || m[1] == taken.Addr().String() {
		t.Fatalf("listening line: %s", logs)
	}

	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodPost, "http://"+m[1]+"/v1/responses", strings.NewReader(`{"model":"gpt-5","input":"from a file"}`))
	req.Header.Set("Authorization", "Bearer "+keyAlice)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "Echo: from a file") {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	client.CloseIdleConnections()
	stop()
	if code := <-exit; code != 0 {
		t.Fatalf("exit %d:\n%s", code, stderr)
	}
	rows := readRows(t, filepath.Join(dir, "usage.db"))
	if len(rows) != 1 {
		t.Fatalf("rows = %d", len(rows))
	}
	for _, row := range rows {
		checkUsage(t, row, up.Served()[0].Usage)
	}
}

// Where the records go when the config leaves the dsn out: beside a
// SQLite usage log, in the usage PostgreSQL database, on the top-level
// Redis server.
func TestParseConfigConversationsDefaults(t *testing.T) {
	const base = `"accounts": [{"id": "a1", "base_url": "https://x/v1", "api_key": "sk-x"}], "api_keys": [{"key": "rk-x", "user_id": "u1"}]`
	for _, c := range []struct{ name, doc string }{
		{"sqlite beside usage", `"usage": {"dsn": "/var/lib/relayd/usage.db"}, "conversations": {"driver": "sqlite"}`},
		{"sqlite beside a file URI", `"usage": {"dsn": "file:/var/lib/relayd/usage.db?cache=private"}, "conversations": {"driver": "sqlite"}`},
		{"sqlite in the working directory", `"usage": {"driver": "postgres", "dsn": "postgres://h/db"}, "conversations": {"driver": "sqlite"}`},
		{"postgres of usage", `"usage": {"driver": "postgres", "dsn": "postgres://h/db"}, "conversations": {"driver": "postgres", "ttl": "2h"}`},
		{"redis of the relay", `"redis": "redis://127.0.0.1:6379/2", "conversations": {"driver": "redis"}`},
		{"redis of its own", `"redis": "redis://127.0.0.1:6379/2", "conversations": {"driver": "redis", "dsn": "redis://10.0.0.9:6379/0"}`},
		{"off", `"conversations": {"driver": "off"}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := parseConfig([]byte(`{` + base + `, ` + c.doc + `}`))
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]ConversationsConfig{
				"sqlite beside usage":             {Driver: "sqlite", DSN: "/var/lib/relayd/conversations.db", TTL: "24h"},
				"sqlite beside a file URI":        {Driver: "sqlite", DSN: "/var/lib/relayd/conversations.db", TTL: "24h"},
				"sqlite in the working directory": {Driver: "sqlite", DSN: "conversations.db", TTL: "24h"},
				"postgres of usage":               {Driver: "postgres", DSN: "postgres://h/db", TTL: "2h"},
				"redis of the relay":              {Driver: "redis", DSN: "redis://127.0.0.1:6379/2", TTL: "24h"},
				"redis of its own":                {Driver: "redis", DSN: "redis://10.0.0.9:6379/0", TTL: "24h"},
				"off":                             {Driver: "off", TTL: "24h"},
			}[c.name]
			if cfg.Conversations != want {
				t.Fatalf("conversations = %+v, want %+v", cfg.Conversations, want)
			}
		})
	}
	cfg := ConversationsConfig{Driver: "postgres", DSN: "postgres://relayd:pw-secret-1@db.internal:6432/convs"}
	if got := cfg.describe(); got != "postgres relayd@db.internal:6432/convs" {
		t.Errorf("describe = %q", got)
	}
	cfg = ConversationsConfig{Driver: "redis", DSN: "redis://u:pw-secret-1@10.0.0.9:6379/4"}
	if got := cfg.describe(); got != "redis 10.0.0.9:6379/4" {
		t.Errorf("describe = %q", got)
	}
}

// redis_slot_linger: 50 ms with redis unless set; "0s" keeps nothing;
// without redis nothing lingers.
func TestSlotLingerDefault(t *testing.T) {
	for _, c := range []struct {
		redis, linger string
		want          time.Duration
	}{
		{"redis://127.0.0.1:6379/0", "", 50 * time.Millisecond},
		{"redis://127.0.0.1:6379/0", "0s", 0},
		{"redis://127.0.0.1:6379/0", "250ms", 250 * time.Millisecond},
		{"", "", 0},
	} {
		cfg := Config{Redis: c.redis, RedisSlotLinger: c.linger, APIKeys: []APIKeyConfig{{Key: keyAlice, UserID: "alice"}},
			Accounts: []AccountConfig{{ID: "a1", BaseURL: "https://api.openai.com/v1", APIKey: "sk-a1"}}}
		cfg.applyDefaults()
		if err := cfg.validate(); err != nil {
			t.Fatalf("%+v: %v", c, err)
		}
		if got := cfg.slotLinger(); got != c.want {
			t.Errorf("redis %q, linger %q: %v, want %v", c.redis, c.linger, got, c.want)
		}
	}
}
