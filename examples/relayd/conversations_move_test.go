package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/relaykit/responsesrelay/conversation"
	"github.com/relaykit/responsesrelay/examples/internal/pgtest"
	"github.com/relaykit/responsesrelay/examples/internal/redistest"
	"github.com/relaykit/responsesrelay/relay/relaytest"
)

// TestConversationsMoveThroughStore drives real turns through relayd with
// each conversations driver: a turn served by a1 is recorded in the
// configured store; once a1 cools down, a turn continuing it with
// previous_response_id is served by a2, which receives the history the
// relay rebuilt from that store (a2 never made the previous response).
func TestConversationsMoveThroughStore(t *testing.T) {
	for _, c := range []struct {
		name string
		conf func(t *testing.T) ConversationsConfig
	}{
		{"memory", func(*testing.T) ConversationsConfig { return ConversationsConfig{Driver: "memory"} }},
		{"sqlite", func(t *testing.T) ConversationsConfig {
			return ConversationsConfig{Driver: "sqlite", DSN: filepath.Join(t.TempDir(), "conversations.db")}
		}},
		{"postgres", func(t *testing.T) ConversationsConfig {
			return ConversationsConfig{Driver: "postgres", DSN: pgtest.DSN(t, "relayd_conv_move_")}
		}},
		{"redis", func(t *testing.T) ConversationsConfig {
			return ConversationsConfig{Driver: "redis", DSN: redistest.URL(t), TTL: "10m"}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			conf := c.conf(t)
			e := newEnv(t, []string{"a1", "a2"}, func(cfg *Config) {
				cfg.Accounts[0].Priority, cfg.Accounts[1].Priority = 0, 1
				cfg.Conversations = conf
			})
			moveThroughStore(t, e)
		})
	}
}

func moveThroughStore(t *testing.T, e *env) {
	t.Helper()
	auth := []string{"Authorization", "Bearer " + keyAlice}
	st := e.srv.relay.Conversations
	owner := keyID(sha256.Sum256([]byte(keyAlice)))
	ctx := context.Background()

	resp, b := e.post(`{"model":"gpt-5","input":"first question"}`, auth...)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("turn 1: %d %s", resp.StatusCode, b)
	}
	first := gjson.GetBytes(b, "id").Str
	rec, err := st.Get(ctx, owner, first)
	if err != nil {
		t.Fatalf("turn 1 is not in the %s store: %v", e.cfg.Conversations.Driver, err)
	}
	t.Cleanup(func() { st.Delete(context.Background(), owner, first) })
	if gjson.GetBytes(rec, "account_id").Str != "a1" || !strings.Contains(string(rec), "first question") {
		t.Fatalf("record of turn 1: %s", rec)
	}

	// a1 answers an unrelated turn with 429 and cools down; a2 serves it.
	e.up.Script("a1", relaytest.Step{Status: 429, Header: http.Header{"Retry-After": {"120"}}})
	if resp, b := e.post(`{"model":"gpt-5","input":"unrelated"}`, auth...); resp.StatusCode != http.StatusOK {
		t.Fatalf("cooling turn: %d %s", resp.StatusCode, b)
	}

	resp, b = e.post(`{"model":"gpt-5","input":"second question","previous_response_id":"`+first+`"}`, auth...)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "Echo: second question") {
		t.Fatalf("turn 2: %d %s", resp.StatusCode, b)
	}
	second := gjson.GetBytes(b, "id").Str
	t.Cleanup(func() { st.Delete(context.Background(), owner, second) })
	reqs := e.up.Requests()
	moved := reqs[len(reqs)-1]
	if moved.Account != "a2" || gjson.GetBytes(moved.Body, "previous_response_id").Exists() {
		t.Fatalf("turn 2 went to %s as %s", moved.Account, moved.Body)
	}
	if in := gjson.GetBytes(moved.Body, "input").Raw; !strings.Contains(in, "first question") ||
		!strings.Contains(in, "Echo: first question") || !strings.Contains(in, "second question") {
		t.Fatalf("a2 received the input %s, not the history", in)
	}
	count := map[string]int{}
	for _, r := range reqs {
		count[r.Account]++
	}
	if count["a1"] != 2 || count["a2"] != 2 {
		t.Fatalf("requests per account = %v; want a1 left alone once cooling", count)
	}

	// The moved turn is recorded too, on a2, continuing turn 1.
	rec, err = st.Get(ctx, owner, second)
	if err != nil {
		t.Fatalf("turn 2 is not in the store: %v", err)
	}
	if gjson.GetBytes(rec, "account_id").Str != "a2" || gjson.GetBytes(rec, "previous_response_id").Str != first {
		t.Fatalf("record of turn 2: %s", rec)
	}
	// Another key does not see either.
	bob := keyID(sha256.Sum256([]byte(keyBob)))
	for _, id := range []string{first, second} {
		if _, err := st.Get(ctx, bob, id); !errors.Is(err, conversation.ErrNotFound) {
			t.Fatalf("bob's key reading %s: %v", id, err)
		}
	}
}
