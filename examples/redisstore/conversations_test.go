package redisstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/conversation"
	"github.com/relaykit/responsesrelay/examples/redisstore"
)

// convRecord returns a record of key and id shaped like the relay's, with
// space and bytes that a JSON round trip would change.
func convRecord(key, id string) []byte {
	return []byte(`{"response_id":"` + id + `", "api_key_id":"` + key + `","model":"gpt-5","account_id":"acct-1",` +
		`"input":[{"role":"user","content":"h\u00e9llo"}], "output":[ {"type":"reasoning","encrypted_content":"gAAA=="} ]}` +
		"\x00\xff ")
}

func convGet(t *testing.T, s conversation.Store, key, id string, want []byte) {
	t.Helper()
	got, err := s.Get(context.Background(), key, id)
	if err != nil {
		t.Fatalf("Get(%s, %s): %v", key, id, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Get(%s, %s) =\n%q\nwant\n%q", key, id, got, want)
	}
}

func convMiss(t *testing.T, s conversation.Store, key, id string) {
	t.Helper()
	got, err := s.Get(context.Background(), key, id)
	if !errors.Is(err, conversation.ErrNotFound) || got != nil {
		t.Fatalf("Get(%.20q, %.20q) = %q, %v; want ErrNotFound", key, id, got, err)
	}
}

func convPut(t *testing.T, s conversation.Store, key, id string, rec []byte) {
	t.Helper()
	if err := s.Put(context.Background(), key, id, rec); err != nil {
		t.Fatal(err)
	}
}

func TestConversations(t *testing.T) {
	c := newClient(t)
	p := prefix(t, c)
	s := redisstore.NewConversations(c, &redisstore.ConversationOptions{Prefix: p, TTL: time.Hour})
	ctx := context.Background()

	convMiss(t, s, "k-1", "resp_1")
	r := convRecord("k-1", "resp_1")
	convPut(t, s, "k-1", "resp_1", r)
	convGet(t, s, "k-1", "resp_1", r)
	// One string key holding the bytes as given, with the TTL in
	// milliseconds.
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

	// Replace; an empty record is a record.
	r2 := []byte(`{"account_id":"acct-2"}`)
	convPut(t, s, "k-1", "resp_1", r2)
	convGet(t, s, "k-1", "resp_1", r2)
	convPut(t, s, "k-1", "resp_empty", nil)
	convGet(t, s, "k-1", "resp_empty", []byte{})

	if err := s.Delete(ctx, "k-1", "resp_1"); err != nil {
		t.Fatal(err)
	}
	convMiss(t, s, "k-1", "resp_1")
	if n := c.Exists(ctx, key).Val(); n != 0 {
		t.Fatal("key still there after Delete")
	}
	if err := s.Delete(ctx, "k-1", "resp_1"); err != nil {
		t.Fatalf("deleting a missing record: %v", err)
	}
}

// A response id is found and deleted only under the key that made it,
// whatever separators the ids hold.
func TestConversationsScopedByAPIKey(t *testing.T) {
	c := newClient(t)
	p := prefix(t, c)
	s := redisstore.NewConversations(c, &redisstore.ConversationOptions{Prefix: p})
	ctx := context.Background()
	a := convRecord("key-a", "resp_1")
	convPut(t, s, "key-a", "resp_1", a)
	convMiss(t, s, "key-b", "resp_1")
	convMiss(t, s, "", "resp_1")
	if err := s.Delete(ctx, "key-b", "resp_1"); err != nil {
		t.Fatal(err)
	}
	convGet(t, s, "key-a", "resp_1", a)

	// "a:b" + "c" and "a" + "b:c" would share a key without escaping.
	ab := convRecord("a:b", "c")
	convPut(t, s, "a:b", "c", ab)
	convMiss(t, s, "a", "b:c")
	a2 := convRecord("a", "b:c")
	convPut(t, s, "a", "b:c", a2)
	convGet(t, s, "a:b", "c", ab)
	convGet(t, s, "a", "b:c", a2)
	if err := s.Delete(ctx, "a", "b:c"); err != nil {
		t.Fatal(err)
	}
	convGet(t, s, "a:b", "c", ab)
	pct := convRecord("a%3Ab", "c")
	convPut(t, s, "a%3Ab", "c", pct)
	convGet(t, s, "a:b", "c", ab)
	convGet(t, s, "a%3Ab", "c", pct)
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
	convPut(t, s, "k", "resp_1", convRecord("k", "resp_1"))
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
	convPut(t, s, "k", id, convRecord("k", id))
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

// Concurrent use (run with -race) answers each key with its own records.
func TestConversationsConcurrent(t *testing.T) {
	c := newClient(t)
	p := prefix(t, c)
	s := redisstore.NewConversations(c, &redisstore.ConversationOptions{Prefix: p})
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			key := fmt.Sprint("k", w%2)
			for i := range 60 {
				id := fmt.Sprint("resp_", i%8)
				var err error
				switch i % 3 {
				case 0:
					err = s.Put(ctx, key, id, convRecord(key, id))
				case 1:
					var r []byte
					if r, err = s.Get(ctx, key, id); err == nil && !bytes.Equal(r, convRecord(key, id)) {
						t.Errorf("Get(%s, %s) = %.60q, another record", key, id, r)
					}
					if errors.Is(err, conversation.ErrNotFound) {
						err = nil
					}
				case 2:
					err = s.Delete(ctx, key, id)
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestConversationsUnavailable(t *testing.T) {
	s := redisstore.NewConversations(unreachableClient(t, closedAddr(t)), nil)
	ctx := context.Background()
	if _, err := s.Get(ctx, "k", "r"); !errors.Is(err, redisstore.ErrUnavailable) {
		t.Fatalf("Get: %v", err)
	}
	if err := s.Put(ctx, "k", "r", convRecord("k", "r")); !errors.Is(err, redisstore.ErrUnavailable) {
		t.Fatalf("Put: %v", err)
	}
	if err := s.Delete(ctx, "k", "r"); !errors.Is(err, redisstore.ErrUnavailable) {
		t.Fatalf("Delete: %v", err)
	}
}

// Ids the client chooses may hold any bytes: a Get of them is a miss,
// never another record, and the store keeps working.
func TestConversationsHostileIDs(t *testing.T) {
	c := newClient(t)
	p := prefix(t, c)
	s := redisstore.NewConversations(c, &redisstore.ConversationOptions{Prefix: p})
	ctx := context.Background()
	convPut(t, s, "k", "resp_1", convRecord("k", "resp_1"))
	for _, id := range []string{"resp_\x00", "resp_\xff\xfe", "*", strings.Repeat("r", 64<<10)} {
		convMiss(t, s, "k", id)
		convMiss(t, s, id, "resp_1")
		if err := s.Delete(ctx, "k", id); err != nil {
			t.Fatalf("Delete(%.20q): %v", id, err)
		}
	}
	convGet(t, s, "k", "resp_1", convRecord("k", "resp_1"))
}
