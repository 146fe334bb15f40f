// Package redistest finds the Redis server of the examples' tests.
package redistest

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// URL returns RELAY_TEST_REDIS_URL once the server answers. Without it the
// test is skipped, except in CI (CI=true), where .ci/run starts
// redis-server and a missing or dead server is a failure.
func URL(tb testing.TB) string {
	tb.Helper()
	ci := os.Getenv("CI") == "true"
	raw := os.Getenv("RELAY_TEST_REDIS_URL")
	if raw == "" {
		if ci {
			tb.Fatal("RELAY_TEST_REDIS_URL is not set; .ci/run starts redis-server and exports it")
		}
		tb.Skip("RELAY_TEST_REDIS_URL is not set: start redis-server and set it " +
			"(e.g. redis://127.0.0.1:6379/0) to run the Redis tests")
	}
	opts := parse(tb, raw)
	opts.ContextTimeoutEnabled = true
	c := redis.NewClient(opts)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	err := c.Ping(ctx).Err()
	cancel()
	c.Close()
	if err != nil {
		if ci {
			tb.Fatalf("Redis at RELAY_TEST_REDIS_URL=%q is unreachable: %v", raw, err)
		}
		tb.Skipf("Redis at RELAY_TEST_REDIS_URL=%q is unreachable (%v): start redis-server to run the Redis tests", raw, err)
	}
	return raw
}

// Options returns new options for the server of URL.
func Options(tb testing.TB) *redis.Options {
	tb.Helper()
	return parse(tb, URL(tb))
}

func parse(tb testing.TB, raw string) *redis.Options {
	tb.Helper()
	opts, err := redis.ParseURL(raw)
	if err != nil {
		tb.Fatalf("RELAY_TEST_REDIS_URL=%q: %v", raw, err)
	}
	return opts
}
