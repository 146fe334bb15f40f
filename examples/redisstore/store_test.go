package redisstore_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/examples/internal/testservice"
	"github.com/relaykit/responsesrelay/examples/redisstore"
)

func TestStore(t *testing.T) {
	c := newClient(t)
	p := prefix(t, c)
	s := redisstore.NewStore(c, &redisstore.StoreOptions{Prefix: p})
	ctx := context.Background()

	if v, ok, err := s.Get(ctx, "resp:missing"); err != nil || ok || v != "" {
		t.Fatalf("missing key: %q %v %v", v, ok, err)
	}
	if err := s.Set(ctx, "resp:resp_1", "acct-a", time.Hour); err != nil {
		t.Fatal(err)
	}
	if v, ok, err := s.Get(ctx, "resp:resp_1"); err != nil || !ok || v != "acct-a" {
		t.Fatalf("Get = %q %v %v", v, ok, err)
	}
	// The prefix is applied, and the TTL is set in milliseconds.
	if pttl := c.PTTL(ctx, p+"sticky:resp:resp_1").Val(); pttl <= 59*time.Minute || pttl > time.Hour {
		t.Fatalf("PTTL = %s, want about 1h", pttl)
	}
	// Overwrite, and no TTL for ttl <= 0.
	if err := s.Set(ctx, "resp:resp_1", "acct-b", 0); err != nil {
		t.Fatal(err)
	}
	if v, _, _ := s.Get(ctx, "resp:resp_1"); v != "acct-b" {
		t.Fatalf("after overwrite: %q", v)
	}
	if pttl := c.PTTL(ctx, p+"sticky:resp:resp_1").Val(); pttl != -1 {
		t.Fatalf("PTTL = %s, want none (-1)", pttl)
	}
	if err := s.Delete(ctx, "resp:resp_1"); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.Get(ctx, "resp:resp_1"); ok {
		t.Fatal("deleted key still there")
	}
	if err := s.Delete(ctx, "resp:resp_1"); err != nil {
		t.Fatalf("deleting a missing key: %v", err)
	}

	// Short TTLs expire.
	if err := s.Set(ctx, "sess:2:k1:s", "acct-c", 30*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the binding to expire", func() bool {
		_, ok, err := s.Get(ctx, "sess:2:k1:s")
		return err == nil && !ok
	})
}

func TestStoreUnavailable(t *testing.T) {
	s := redisstore.NewStore(unreachableClient(t, testservice.ClosedAddr(t)), nil)
	ctx := context.Background()
	if _, _, err := s.Get(ctx, "k"); !errors.Is(err, redisstore.ErrUnavailable) {
		t.Fatalf("Get: %v", err)
	}
	if err := s.Set(ctx, "k", "v", time.Minute); !errors.Is(err, redisstore.ErrUnavailable) {
		t.Fatalf("Set: %v", err)
	}
	if err := s.Delete(ctx, "k"); !errors.Is(err, redisstore.ErrUnavailable) {
		t.Fatalf("Delete: %v", err)
	}
}
