// Package redistest finds the Redis server of the examples' tests.
package redistest

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/relaykit/responsesrelay/examples/internal/testservice"
)

// URL returns RELAY_TEST_REDIS_URL once the server answers. Without it the
// test is skipped, except in CI (CI=true), where .ci/run starts
// redis-server and a missing or dead server is a failure.
func URL(tb testing.TB) string {
	tb.Helper()
	return redisService.URL(tb, func(ctx context.Context, raw string) error {
		opts := parse(tb, raw)
		opts.ContextTimeoutEnabled = true
		c := redis.NewClient(opts)
		defer c.Close()
		return c.Ping(ctx).Err()
	})
}

var redisService = testservice.Service{Env: "RELAY_TEST_REDIS_URL", Name: "Redis", Server: "redis-server",
	Example: "redis://127.0.0.1:6379/0", Timeout: 5 * time.Second}

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
