package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/conversation"
	"github.com/relaykit/responsesrelay/examples/internal/pgtest"
	"github.com/relaykit/responsesrelay/examples/internal/redistest"
	"github.com/relaykit/responsesrelay/examples/internal/testservice"
	"github.com/relaykit/responsesrelay/examples/redisstore"
	"github.com/relaykit/responsesrelay/examples/sqlconversation"
	"github.com/relaykit/responsesrelay/relay/relaytest"
)

// roundTrip stores a record through the relay's store, reads it back
// under its key only, and deletes it.
func roundTrip(t *testing.T, st conversation.Store) {
	t.Helper()
	ctx := context.Background()
	id := "resp_" + randomHex(6)
	r := []byte(`{"response_id":"` + id + `","api_key_id":"k-1","account_id":"a1","input":[],"output":[]}`)
	if err := st.Put(ctx, "k-1", id, r); err != nil {
		t.Fatal(err)
	}
	got, err := st.Get(ctx, "k-1", id)
	if err != nil || !bytes.Equal(got, r) {
		t.Fatalf("Get = %q, %v", got, err)
	}
	if _, err := st.Get(ctx, "k-2", id); !errors.Is(err, conversation.ErrNotFound) {
		t.Fatalf("another key's Get: %v", err)
	}
	if err := st.Delete(ctx, "k-1", id); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Get(ctx, "k-1", id); !errors.Is(err, conversation.ErrNotFound) {
		t.Fatalf("Get after Delete: %v", err)
	}
}

func TestConversationsDefaultMemory(t *testing.T) {
	e := newEnv(t, []string{"a1"}, nil)
	m, ok := e.srv.relay.Conversations.(*conversation.Memory)
	if !ok || m.MaxBytes != 256<<20 || m.TTL != 24*time.Hour {
		t.Fatalf("Conversations = %#v", e.srv.relay.Conversations)
	}
	roundTrip(t, m)
}

func TestConversationsOff(t *testing.T) {
	e := newEnv(t, []string{"a1"}, func(c *Config) { c.Conversations.Driver = "off" })
	m, ok := e.srv.relay.Conversations.(*conversation.Memory)
	if !ok || m.MaxBytes >= 0 {
		t.Fatalf("Conversations = %#v, want a Memory keeping nothing", e.srv.relay.Conversations)
	}
}

// The demo builds its config in code, without defaults: memory.
func TestConversationsUnsetIsMemory(t *testing.T) {
	up := relaytest.NewServer()
	defer up.Close()
	srv, err := newServer(Config{
		Accounts: []AccountConfig{{ID: "a1", Group: defaultGroup, BaseURL: up.BaseURL("a1"), APIKey: upstreamKey("a1")}},
		APIKeys:  []APIKeyConfig{{Key: keyAlice, UserID: "alice", Group: defaultGroup}},
		Usage:    UsageConfig{Driver: "sqlite", DSN: filepath.Join(t.TempDir(), "usage.db")},
	}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close(context.Background())
	if m, ok := srv.relay.Conversations.(*conversation.Memory); !ok || m.MaxBytes != 256<<20 || m.TTL != 24*time.Hour {
		t.Fatalf("Conversations = %#v", srv.relay.Conversations)
	}
}

// SQLite: the file beside the usage log, closed with the server.
func TestConversationsSQLite(t *testing.T) {
	e := newEnv(t, []string{"a1"}, func(c *Config) { c.Conversations = ConversationsConfig{Driver: "sqlite", TTL: "2h"} })
	want := filepath.Join(filepath.Dir(e.cfg.Usage.DSN), "conversations.db")
	if e.cfg.Conversations.DSN != want {
		t.Fatalf("dsn = %q, want %q", e.cfg.Conversations.DSN, want)
	}
	st, ok := e.srv.relay.Conversations.(*sqlconversation.Store)
	if !ok || st.Driver() != "sqlite" {
		t.Fatalf("Conversations = %#v", e.srv.relay.Conversations)
	}
	roundTrip(t, st)
	if err := st.Put(context.Background(), "k-1", "resp_kept", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	e.finish()
	if err := st.DB().Ping(); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("database after Close: %v", err)
	}
	// The file keeps the records for the next start.
	again, err := sqlconversation.OpenSQLite(context.Background(), want, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if _, err := again.Get(context.Background(), "k-1", "resp_kept"); err != nil {
		t.Fatalf("record after restart: %v", err)
	}
}

// PostgreSQL: the usage database when no dsn is given.
func TestConversationsPostgres(t *testing.T) {
	dsn := pgtest.DSN(t, "relayd_conv_test_")
	e := newEnv(t, []string{"a1"}, func(c *Config) {
		c.Usage = UsageConfig{Driver: "postgres", DSN: dsn}
		c.Conversations = ConversationsConfig{Driver: "postgres"}
	})
	st, ok := e.srv.relay.Conversations.(*sqlconversation.Store)
	if !ok || st.Driver() != "postgres" || e.cfg.Conversations.DSN != dsn {
		t.Fatalf("Conversations = %#v, dsn %q", e.srv.relay.Conversations, e.cfg.Conversations.DSN)
	}
	roundTrip(t, st)
}

// Redis: the relay's own client when the dsn is the top-level redis; a
// client of its own, closed with the server, otherwise.
func TestConversationsRedis(t *testing.T) {
	url := redistest.URL(t)
	t.Run("shared", func(t *testing.T) {
		e := newEnv(t, []string{"a1"}, func(c *Config) {
			c.Redis = url
			c.Conversations.Driver = "redis"
		})
		if _, ok := e.srv.relay.Conversations.(*redisstore.Conversations); !ok || e.srv.convRedis != nil {
			t.Fatalf("Conversations = %#v, own client %v", e.srv.relay.Conversations, e.srv.convRedis)
		}
		roundTrip(t, e.srv.relay.Conversations)
	})
	t.Run("own", func(t *testing.T) {
		e := newEnv(t, []string{"a1"}, func(c *Config) { c.Conversations = ConversationsConfig{Driver: "redis", DSN: url} })
		if _, ok := e.srv.relay.Conversations.(*redisstore.Conversations); !ok || e.srv.convRedis == nil || e.srv.rdb != nil {
			t.Fatalf("Conversations = %#v, own client %v", e.srv.relay.Conversations, e.srv.convRedis)
		}
		roundTrip(t, e.srv.relay.Conversations)
		c := e.srv.convRedis
		e.finish()
		if err := c.Ping(context.Background()).Err(); err == nil {
			t.Fatal("own Redis client still open after Close")
		}
	})
}

// A conversations Redis that does not answer stops relayd at start, with
// an error naming the server but not its password, and the usage log
// opened before it is closed again.
func TestConversationsRedisUnreachableAtStart(t *testing.T) {
	addr := testservice.ClosedAddr(t)
	err := startFails(t, "the conversations Redis", func(cfg *Config) {
		cfg.Usage = UsageConfig{DSN: filepath.Join(t.TempDir(), "usage.db")}
		cfg.Conversations = ConversationsConfig{Driver: "redis", DSN: "redis://relayd:pw-secret-9@" + addr + "/3"}
	})
	if msg := err.Error(); !strings.Contains(msg, "conversations: redis at "+addr+"/3") || strings.Contains(msg, "pw-secret") {
		t.Fatalf("error = %v", err)
	}
}

// A SQLite file that cannot be created stops relayd at start.
func TestConversationsSQLiteFailsAtStart(t *testing.T) {
	err := startFails(t, "its conversations database", func(cfg *Config) {
		cfg.Usage = UsageConfig{DSN: filepath.Join(t.TempDir(), "usage.db")}
		cfg.Conversations = ConversationsConfig{Driver: "sqlite", DSN: filepath.Join(t.TempDir(), "missing", "conversations.db")}
	})
	if !strings.Contains(err.Error(), "conversations (sqlite ") {
		t.Fatalf("error = %v", err)
	}
}
