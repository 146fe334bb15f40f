package main

// Account shaping in relayd's config: Azure-style auth and query, body
// patches, stream-only upstreams.

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/responses"
	"github.com/tidwall/gjson"
)

func TestParseConfigAccountShaping(t *testing.T) {
	doc := `{"accounts": [{"id": "az", "base_url": "https://x.openai.azure.com/openai/v1", "api_key": "k",
		"auth_header": "api-key", "query": {"api-version": "2025-04-01-preview"},
		"body_patch": {"store": false, "temperature": null}, "stream_only": true}],
		"api_keys": [{"key": "rk-shaping-1", "user_id": "u1"}]}`
	cfg, err := parseConfig([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	pool, _ := buildPool(cfg.Accounts)
	accts, _ := pool.Accounts(t.Context(), "default")
	a := accts[0]
	if a.AuthHeader != "api-key" || a.Query.Get("api-version") != "2025-04-01-preview" || !a.StreamOnly ||
		string(a.BodyPatch["store"]) != "false" || a.BodyPatch["temperature"] != nil || len(a.BodyPatch) != 2 {
		t.Fatalf("account %+v", a)
	}
}

func TestParseConfigAccountShapingErrors(t *testing.T) {
	const key = `"api_keys": [{"key": "rk-secret-value-1", "user_id": "u1"}]`
	acct := func(extra string) string {
		return `{"accounts": [{"id": "a1", "base_url": "https://x/v1", "api_key": "sk-secret-value-a1", ` + extra + `}], ` + key + `}`
	}
	cases := []struct{ name, doc, want string }{
		{"bad auth header", acct(`"auth_header": "api key"`), `auth_header: "api key" is not a valid header name`},
		{"routed patch", acct(`"body_patch": {"model": "x"}`), `the relay routes by "model"`},
		{"wildcard patch", acct(`"body_patch": {"tools.*": 1}`), `is not allowed in a path`},
		{"query newline", acct(`"query": {"a": "b\nc"}`), `query: "a" is not a valid parameter`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := parseConfig([]byte(c.doc))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error = %v\nwant it to contain %q", err, c.want)
			}
			if strings.Contains(err.Error(), "sk-secret-value-a1") {
				t.Fatalf("error quotes a secret: %v", err)
			}
		})
	}
}

// TestAccountShapingThroughRelayd: an Azure-style, stream-only account
// with a body patch serves an SDK client's JSON request: the upstream
// gets the key in api-key, stream:true, store:false and no temperature;
// the client gets the completed response.
func TestAccountShapingThroughRelayd(t *testing.T) {
	e := newEnv(t, []string{"az"}, func(c *Config) {
		a := &c.Accounts[0]
		a.AuthHeader, a.StreamOnly = "api-key", true
		a.BodyPatch = map[string]json.RawMessage{"store": json.RawMessage(`false`), "temperature": json.RawMessage(`null`)}
	})
	e.up.SetStreamOnly("az", true)
	client := e.sdk(keyAlice)
	resp, err := client.Responses.New(t.Context(), responses.ResponseNewParams{Model: "gpt-5", Input: userText("shaped"),
		Temperature: openai.Float(0.3)})
	if err != nil || resp.Status != "completed" || resp.OutputText() != "Echo: shaped" {
		t.Fatalf("New: %v %+v", err, resp)
	}
	reqs := e.up.Requests()
	q := reqs[len(reqs)-1]
	if q.Header.Get("Api-Key") != upstreamKey("az") || q.Header.Get("Authorization") != "" {
		t.Fatalf("upstream auth headers %v", q.Header)
	}
	if gjson.GetBytes(q.Body, "stream").Type != gjson.True || gjson.GetBytes(q.Body, "store").Type != gjson.False ||
		gjson.GetBytes(q.Body, "temperature").Exists() {
		t.Fatalf("upstream body %s", q.Body)
	}
	rows := e.rows()
	if len(rows) != 1 {
		t.Fatalf("rows %+v", rows)
	}
	for _, row := range rows {
		if row.Status != "completed" || row.Output == 0 {
			t.Fatalf("row %+v", row)
		}
	}
}
