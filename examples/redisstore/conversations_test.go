package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/conversation"
	"github.com/relaykit/responsesrelay/examples/internal/convtest"
	"github.com/relaykit/responsesrelay/examples/internal/testservice"
	"github.com/relaykit/responsesrelay/examples/redisstore"
)

// Redis passes the conformance suite.
func TestConversationsConformance(t *testing.T) {
	c := newClient(t)
	convtest.Run(t, func(t *testing.T) conversation.Store {
		return redisstore.NewConversations(c, &redisstore.ConversationOptions{Prefix: prefix(t, c)})
	})
}

// A record is one string key holding the bytes as given, with the TTL in
// milliseconds, gone after Delete.
func TestConversationsKeyLayout(t *testing.T) {
	c := newClient(t)
	p := prefix(t, c)
	s := redisstore.NewConversations(c, &redisstore.ConversationOptions{Prefix: p, TTL: time.Hour})
	ctx := context.Background()

	r := convtest.Record("k-1", "resp_1")
	convtest.Put(t, s, "k-1", "resp_1", r)
	key := p + "conv:k-1:resp_1"
	if typ := c.Type(ctx, key).Val(); typ != "string" {
		t.Fatalf("TYPE %s = %q", key, typ)
	}
	if pttl := c.PTTL(ctx, key).Val(); pttl <= 59*time.Minute || pttl > time.Hour {
		t.Fatalf("PTTL = %s, want about 1h", pttl)
	}
	if v := c.Get(ctx, key).Val(); v != string(r) {
		t.Fatalf("value = %q, want %q", v, r)
	}
	convtest.MustDelete(t, s, "k-1", "resp_1")
	if n := c.Exists(ctx, key).Val(); n != 0 {
		t.Fatal("key still there after Delete")
	}
}

// A response id is found and deleted only under the key that made it,
// whatever separators the ids hold (scoping itself: the conformance
// suite).
func TestConversationsKeyEscaping(t *testing.T) {
	c := newClient(t)
	p := prefix(t, c)
	s := redisstore.NewConversations(c, &redisstore.ConversationOptions{Prefix: p})
	ctx := context.Background()
	convtest.Put(t, s, "key-a", "resp_1", convtest.Record("key-a", "resp_1"))

	// "a:b" + "c" and "a" + "b:c" would share a key without escaping.
	ab := convtest.Record("a:b", "c")
	convtest.Put(t, s, "a:b", "c", ab)
	convtest.MustMiss(t, s, "a", "b:c")
	a2 := convtest.Record("a", "b:c")
	convtest.Put(t, s, "a", "b:c", a2)
	convtest.MustGet(t, s, "a:b", "c", ab)
	convtest.MustGet(t, s, "a", "b:c", a2)
	convtest.MustDelete(t, s, "a", "b:c")
	convtest.MustGet(t, s, "a:b", "c", ab)
	pct := convtest.Record("a%3Ab", "c")
	convtest.Put(t, s, "a%3Ab", "c", pct)
	convtest.MustGet(t, s, "a:b", "c", ab)
	convtest.MustGet(t, s, "a%3Ab", "c", pct)
	// The escaping is what scopes a key: every pair above has a key of
	// its own.
	for _, k := range []string{"conv:a%3Ab:c", "conv:a%253Ab:c", "conv:key-a:resp_1"} {
		if n := c.Exists(ctx, p+k).Val(); n != 1 {
			t.Errorf("key %s missing", k)
		}
	}
}

func TestConversationsExpire(t *testing.T) {
	c := newClient(t)
	p := prefix(t, c)
	s := redisstore.NewConversations(c, &redisstore.ConversationOptions{Prefix: p, TTL: 30 * time.Millisecond})
	convtest.Put(t, s, "k", "resp_1", convtest.Record("k", "resp_1"))
	waitFor(t, 5*time.Second, "the record to expire", func() bool {
		_, err := s.Get(context.Background(), "k", "resp_1")
		return errors.Is(err, conversation.ErrNotFound)
	})
	if n := c.Exists(context.Background(), p+"conv:k:resp_1").Val(); n != 0 {
		t.Fatal("expired key still in Redis")
	}
}

func TestConversationsDefaultsAndNegativeTTL(t *testing.T) {
	c := newClient(t)
	s := redisstore.NewConversations(c, nil)
	id := fmt.Sprintf("resp_defaults_%d", time.Now().UnixNano())
	convtest.Put(t, s, "k", id, convtest.Record("k", id))
	key := "relay:conv:k:" + id
	t.Cleanup(func() { c.Del(context.Background(), key) })
	if pttl := c.PTTL(context.Background(), key).Val(); pttl <= 23*time.Hour || pttl > 24*time.Hour {
		t.Fatalf("PTTL = %s, want about 24h", pttl)
	}
	defer func() {
		if p := recover(); p == nil || !strings.Contains(fmt.Sprint(p), "TTL") {
			t.Fatalf("negative TTL: recover() = %v", p)
		}
	}()
	redisstore.NewConversations(c, &redisstore.ConversationOptions{TTL: -1})
}

func TestConversationsUnavailable(t *testing.T) {
	s := redisstore.NewConversations(unreachableClient(t, testservice.ClosedAddr(t)), nil)
	ctx := context.Background()
	if _, err := s.Get(ctx, "k", "r"); !errors.Is(err, redisstore.ErrUnavailable) {
		t.Fatalf("Get: %v", err)
	}
	if err := s.Put(ctx, "k", "r", convtest.Record("k", "r")); !errors.Is(err, redisstore.ErrUnavailable) {
		t.Fatalf("Put: %v", err)
	}
	if err := s.Delete(ctx, "k", "r"); !errors.Is(err, redisstore.ErrUnavailable) {
		t.Fatalf("Delete: %v", err)
	}
}
