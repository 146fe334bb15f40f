package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/redis/go-redis/v9"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/examples/sqlusage"
	"github.com/relaykit/responsesrelay/relay"
)

// Defaults of the config file.
const (
	defaultListen = "127.0.0.1:8080"
	defaultGroup  = "default"
	defaultDriver = "sqlite"
	defaultDSN    = "usage.db"
)

// Config is relayd's JSON config file. Field names are the JSON keys;
// unknown keys are an error.
type Config struct {
	Listen   string          `json:"listen"`
	Accounts []AccountConfig `json:"accounts"`
	APIKeys  []APIKeyConfig  `json:"api_keys"`
	Usage    UsageConfig     `json:"usage"`
	// Conversations says where the records of served turns are kept, so
	// that a conversation can move to another account. Default: in memory,
	// 24 h, 256 MiB.
	Conversations ConversationsConfig `json:"conversations"`
	// WSMaxConnsPerKey caps the open WebSocket connections of one client
	// key. 0: twice the key's concurrency, or 16 when that is unlimited
	// (relay.WebSocketOptions.MaxConnsPerKey); negative: no cap.
	WSMaxConnsPerKey int `json:"ws_max_conns_per_key"`
	// Redis, a URL like redis://host:6379/0, moves user and account slots
	// and sticky bindings to that server and shares account cooldowns
	// with the other relayd processes using it. Empty: all in memory.
	Redis string `json:"redis"`
	// RedisSlotLinger, with redis, is how long an account slot stays with
	// this process after a turn that took no user slot (a key without
	// concurrency), so that the next such turn here takes it without a
	// round trip (scheduler.Scheduler.SlotLinger): a duration like
	// "50ms". Meanwhile the other instances count the slot as busy.
	// Default "50ms"; "0s": each slot goes back with its turn.
	RedisSlotLinger string `json:"redis_slot_linger"`
	// AdminToken, when set, enables GET /metrics, GET /debug/accounts and
	// GET /debug/keys for requests with "Authorization: Bearer
	// <admin_token>" (at least 16 characters). Empty: they answer 404.
	AdminToken string `json:"admin_token"`

	// Prices are each model's price (an exact name, or a pattern with
	// the wildcards of accounts[].models), in USD per 1M tokens: every
	// usage record gets its cost_micros from them. They replace the
	// entries of PricesFile of the same name.
	Prices map[string]PriceConfig `json:"prices"`
	// PricesFile is a price file in the format most gateways share
	// (LiteLLM's model_prices_and_context_window.json), read at start.
	PricesFile string `json:"prices_file"`
	// RefuseUnpriced refuses a turn for a model without a price (400
	// model_not_priced) instead of serving it at cost 0.
	RefuseUnpriced bool `json:"refuse_unpriced"`
}

// AccountConfig is one upstream account. It authenticates with APIKey
// or with OAuth, exactly one of them.
type AccountConfig struct {
	ID      string `json:"id"`
	Group   string `json:"group"`
	BaseURL string `json:"base_url"`
	APIKey  string `json:"api_key"`
	// OAuth, in place of APIKey, gets the account's bearer tokens from an
	// OAuth token endpoint with a refresh token (see OAuthConfig).
	OAuth       *OAuthConfig      `json:"oauth"`
	Models      []string          `json:"models"`
	ModelMap    map[string]string `json:"model_map"`
	Concurrency int               `json:"concurrency"`
	Priority    int               `json:"priority"`
	Weight      int               `json:"weight"`
	WebSocket   bool              `json:"websocket"`
	Headers     map[string]string `json:"headers"`
	// WireAPI is the API the upstream speaks: "responses" (the default)
	// or "chat" (Chat Completions at base_url + "/chat/completions",
	// translated by the relay).
	WireAPI string `json:"wire_api"`
	// AuthHeader names the header that carries api_key: "" for
	// "Authorization: Bearer", or Azure OpenAI's "api-key" (the bare key).
	AuthHeader string `json:"auth_header"`
	// Query is added to every upstream URL (Azure's "api-version").
	Query map[string]string `json:"query"`
	// BodyPatch sets fields of every request body the account receives
	// (after translation, for a chat account); a null value removes the
	// field. Keys are dotted paths; the fields the relay routes by (model,
	// stream, input, ...) are refused.
	BodyPatch map[string]json.RawMessage `json:"body_patch"`
	// StreamOnly: the upstream accepts only stream:true; JSON clients are
	// served from the stream.
	StreamOnly bool `json:"stream_only"`
}

// OAuthConfig is an account's OAuth client. relayd refreshes the access
// token ahead of its expiry and when the upstream answers 401; a refresh
// token the endpoint rotates is written back to RefreshTokenFile before
// the new access token is used.
type OAuthConfig struct {
	TokenURL     string `json:"token_url"`
	ClientID     string `json:"client_id"`
	ClientSecret string `json:"client_secret"` // optional: public clients have none
	// RefreshTokenFile holds the refresh token (surrounding whitespace
	// ignored). relayd reads it at start and replaces it atomically, mode
	// 0600, whenever the endpoint rotates the token.
	RefreshTokenFile string `json:"refresh_token_file"`
}

// APIKeyConfig is one client key.
type APIKeyConfig struct {
	Key         string `json:"key"`
	UserID      string `json:"user_id"`
	Group       string `json:"group"`
	Concurrency int    `json:"concurrency"`
	// Budget, RPM (requests per minute) and TPM (tokens per minute) are
	// the key's quotas; a key with any of them makes relayd hold every
	// turn in a ledger (see server.openLedger). nil, 0: none.
	Budget *BudgetConfig `json:"budget"`
	RPM    int64         `json:"rpm"`
	TPM    int64         `json:"tpm"`
}

// UsageConfig says where usage records go.
type UsageConfig struct {
	// Driver is "sqlite" (DSN: a file or file: URI) or "postgres" (DSN: a
	// postgres:// URL or key=value string, as pgx takes them).
	Driver string `json:"driver"`
	DSN    string `json:"dsn"`
	// Spool, when set, is a directory where each record is synced to disk
	// before its turn ends, and from where it is delivered to the
	// database; records left there by a crash are delivered on the next
	// start. Empty: records wait for the database in memory.
	Spool string `json:"spool"`
}

// loadConfig reads, decodes, defaults and validates the file at name.
func loadConfig(name string) (Config, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	cfg, err := parseConfig(data)
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", name, err)
	}
	return cfg, nil
}

// parseConfig decodes data strictly, applies defaults and validates.
func parseConfig(data []byte) (Config, error) {
	var cfg Config
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		return Config{}, describeJSONError(data, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Config{}, errors.New("unexpected data after the top-level JSON object")
	}
	cfg.applyDefaults()
	if err := cfg.validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

func (c *Config) applyDefaults() {
	if c.Listen == "" {
		c.Listen = defaultListen
	}
	for i := range c.Accounts {
		if c.Accounts[i].Group == "" {
			c.Accounts[i].Group = defaultGroup
		}
	}
	for i := range c.APIKeys {
		if c.APIKeys[i].Group == "" {
			c.APIKeys[i].Group = defaultGroup
		}
		if b := c.APIKeys[i].Budget; b != nil && b.Period == "" {
			b.Period = billing.PeriodTotal
		}
	}
	if c.Usage.Driver == "" {
		c.Usage.Driver = defaultDriver
	}
	// A PostgreSQL server has no sensible default; validate says so.
	if c.Usage.DSN == "" && c.Usage.Driver == sqlusage.DriverSQLite {
		c.Usage.DSN = defaultDSN
	}
	c.Conversations.applyDefaults(c.Usage, c.Redis)
	if c.Redis != "" && c.RedisSlotLinger == "" {
		c.RedisSlotLinger = defaultSlotLinger
	}
}

// defaultSlotLinger covers a client's next turn sent at once (an agent
// loop, a benchmark) and keeps a slot from the other instances for no
// longer than a turn's own overhead would.
const defaultSlotLinger = "50ms"

// slotLinger is RedisSlotLinger, validated.
func (c *Config) slotLinger() time.Duration {
	d, _ := time.ParseDuration(c.RedisSlotLinger)
	return d
}

// validate reports every problem at once, one per line. Messages name the
// entry by index and never quote a key.
func (c *Config) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		bad("listen: %q is not host:port", c.Listen)
	}
	if c.Redis != "" {
		if err := checkRedisURL(c.Redis); err != nil {
			bad("redis: %v", err)
		}
	}
	if c.RedisSlotLinger != "" {
		switch d, err := time.ParseDuration(c.RedisSlotLinger); {
		case c.Redis == "":
			bad("redis_slot_linger: used with redis only")
		case err != nil:
			bad("redis_slot_linger: %q is not a duration like \"50ms\"", c.RedisSlotLinger)
		case d < 0 || d > time.Minute:
			bad("redis_slot_linger: %q must be between 0s and 1m", c.RedisSlotLinger)
		}
	}
	if c.AdminToken != "" && len(c.AdminToken) < minAdminToken {
		bad("admin_token: at least %d characters", minAdminToken)
	}
	for i, k := range c.APIKeys {
		if c.AdminToken != "" && k.Key == c.AdminToken {
			bad("admin_token: must differ from api_keys[%d].key", i)
		}
	}
	switch c.Usage.Driver {
	case sqlusage.DriverSQLite:
	case sqlusage.DriverPostgres:
		if strings.TrimSpace(c.Usage.DSN) == "" {
			bad("usage.dsn: required with driver \"postgres\" (a URL like postgres://user@host:5432/db)")
		}
	default:
		bad("usage.driver: %q is not supported; use \"sqlite\" or \"postgres\"", c.Usage.Driver)
	}
	if c.Usage.Spool != "" && strings.TrimSpace(c.Usage.Spool) == "" {
		bad("usage.spool: %q is not a directory name", c.Usage.Spool)
	}
	c.Conversations.validate(bad)
	c.validateMoney(bad)

	if len(c.Accounts) == 0 {
		bad("accounts: at least one upstream account is required")
	}
	groups := map[string]bool{}
	ids := map[string]int{}
	tokenFiles := map[string]int{}
	for i, a := range c.Accounts {
		at := fmt.Sprintf("accounts[%d]", i)
		switch j, dup := ids[a.ID]; {
		case a.ID == "":
			bad("%s: id is required", at)
		case dup:
			bad("%s: duplicate id %q (also accounts[%d])", at, a.ID, j)
		default:
			ids[a.ID] = i
			at = fmt.Sprintf("accounts[%d] (%s)", i, a.ID)
		}
		if err := checkBaseURL(a.BaseURL); err != nil {
			bad("%s: base_url %w", at, err)
		}
		switch {
		case a.APIKey == "" && a.OAuth == nil:
			bad("%s: api_key or oauth is required", at)
		case a.APIKey != "" && a.OAuth != nil:
			bad("%s: api_key and oauth exclude each other; keep one", at)
		case a.OAuth != nil:
			a.OAuth.validate(at, i, tokenFiles, bad)
		}
		switch a.WireAPI {
		case "", "responses", "chat":
		default:
			bad("%s: wire_api: %q is not an API relayd speaks; use \"responses\" or \"chat\"", at, a.WireAPI)
		}
		for _, m := range a.Models {
			if _, err := path.Match(m, ""); m == "" || err != nil {
				bad("%s: models: %q is not a model name or pattern", at, m)
			}
		}
		for from, to := range a.ModelMap {
			if from == "" || to == "" {
				bad("%s: model_map: empty model name", at)
			}
		}
		for name := range a.Headers {
			if !validHeaderName(name) {
				bad("%s: headers: %q is not a valid header name", at, name)
			}
		}
		for _, v := range a.Headers {
			if strings.ContainsAny(v, "\r\n\x00") {
				bad("%s: headers: a value contains characters not allowed in a header", at)
				break
			}
		}
		if a.AuthHeader != "" && !validHeaderName(a.AuthHeader) {
			bad("%s: auth_header: %q is not a valid header name", at, a.AuthHeader)
		}
		for k, v := range a.Query {
			if k == "" || strings.ContainsAny(k+v, "\r\n\x00") {
				bad("%s: query: %q is not a valid parameter", at, k)
			}
		}
		if err := relay.CheckBodyPatch(a.bodyPatch()); err != nil {
			bad("%s: %w", at, err)
		}
		if a.Concurrency < 0 || a.Weight < 0 {
			bad("%s: concurrency and weight must not be negative", at)
		}
		groups[a.Group] = true
	}

	if len(c.APIKeys) == 0 {
		bad("api_keys: at least one client key is required")
	}
	keys := map[[sha256.Size]byte]int{}
	for i, k := range c.APIKeys {
		at := fmt.Sprintf("api_keys[%d]", i)
		if k.Key == "" {
			bad("%s: key is required", at)
		} else {
			sum := sha256.Sum256([]byte(k.Key))
			if j, dup := keys[sum]; dup {
				bad("%s: duplicate key (the same as api_keys[%d])", at, j)
			}
			keys[sum] = i
		}
		if k.UserID == "" {
			bad("%s: user_id is required", at)
		}
		if k.Concurrency < 0 {
			bad("%s: concurrency must not be negative", at)
		}
		if !groups[k.Group] && len(c.Accounts) > 0 {
			bad("%s: group %q has no accounts", at, k.Group)
		}
	}
	return errors.Join(errs...)
}

// validate checks an account's OAuth client. tokenFiles maps each
// refresh_token_file seen to its account's index: two accounts cannot
// share one, as each rotation would overwrite the other's token.
func (o *OAuthConfig) validate(at string, i int, tokenFiles map[string]int, bad func(string, ...any)) {
	if err := checkTokenURL(o.TokenURL); err != nil {
		bad("%s: oauth.token_url %w", at, err)
	}
	if o.ClientID == "" {
		bad("%s: oauth.client_id is required", at)
	}
	if strings.TrimSpace(o.RefreshTokenFile) == "" {
		bad("%s: oauth.refresh_token_file is required", at)
		return
	}
	name := filepath.Clean(o.RefreshTokenFile)
	if j, dup := tokenFiles[name]; dup {
		bad("%s: oauth.refresh_token_file is also accounts[%d]'s; each account needs its own", at, j)
	}
	tokenFiles[name] = i
}

// checkTokenURL is checkBaseURL for a token endpoint.
func checkTokenURL(s string) error {
	if s == "" {
		return errors.New("is required")
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an http(s) URL", redactUserinfo(s))
	}
	if u.User != nil {
		return errors.New("must not carry credentials; use client_id and client_secret")
	}
	return nil
}

func checkBaseURL(s string) error {
	if s == "" {
		return errors.New("is required")
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an http(s) URL like https://api.openai.com/v1", redactUserinfo(s))
	}
	if u.User != nil {
		return errors.New("must not carry credentials; use api_key")
	}
	return nil
}

// redactUserinfo hides whatever could be user:password in a URL that is
// about to be quoted. It works on the raw text because the URLs quoted are
// the ones that failed to parse, and a password holding '/' or '@' is a
// common reason for that: everything between "://" (or the start) and the
// last '@' goes.
func redactUserinfo(s string) string {
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return s
	}
	start := 0
	if i := strings.Index(s, "://"); i >= 0 && i < at {
		start = i + len("://")
	}
	return s[:start] + "xxxxx" + s[at:]
}

// checkRedisURL reports what is wrong with a Redis URL, without quoting
// it (it may carry a password).
func checkRedisURL(s string) error {
	_, err := redis.ParseURL(s)
	if err == nil {
		return nil
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // url.Error quotes the whole URL
	}
	return fmt.Errorf("invalid URL (%v); want one like redis://127.0.0.1:6379/0", err)
}

// redisAddr names the server of a Redis URL for logs and errors, without
// its credentials.
func redisAddr(s string) string {
	o, err := redis.ParseURL(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return fmt.Sprintf("%s/%d", o.Addr, o.DB)
}

// validHeaderName reports whether s is an RFC 9110 token.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
		if !ok {
			return false
		}
	}
	return true
}

// query is Query as url.Values; nil when empty.
func (a AccountConfig) query() url.Values {
	if len(a.Query) == 0 {
		return nil
	}
	q := make(url.Values, len(a.Query))
	for k, v := range a.Query {
		q.Set(k, v)
	}
	return q
}

// bodyPatch is BodyPatch as the relay takes it: a null value removes.
func (a AccountConfig) bodyPatch() map[string]json.RawMessage {
	if len(a.BodyPatch) == 0 {
		return nil
	}
	p := make(map[string]json.RawMessage, len(a.BodyPatch))
	for k, v := range a.BodyPatch {
		if string(bytes.TrimSpace(v)) == "null" {
			v = nil
		}
		p[k] = v
	}
	return p
}

// header converts the config's header map.
func (a AccountConfig) header() http.Header {
	if len(a.Headers) == 0 {
		return nil
	}
	h := make(http.Header, len(a.Headers))
	for k, v := range a.Headers {
		h.Set(k, v)
	}
	return h
}

// describe names the usage database for logs and errors without its
// credentials.
func (u UsageConfig) describe() string {
	if u.Driver != sqlusage.DriverPostgres {
		return u.Driver + " " + u.DSN
	}
	pc, err := pgconn.ParseConfig(u.DSN)
	if err != nil {
		return "postgres (DSN not parsed)"
	}
	return fmt.Sprintf("postgres %s@%s/%s", pc.User, net.JoinHostPort(pc.Host, strconv.Itoa(int(pc.Port))), pc.Database)
}
