package redisstore

import (
	"fmt"

	"github.com/redis/go-redis/v9"
)

// NewClient returns a client for a URL such as "redis://host:6379/0",
// "rediss://user:pass@host:6380/1" or "unix:///run/redis.sock" (see
// redis.ParseURL for the options a URL can carry), with
// ContextTimeoutEnabled set: without it go-redis bounds socket reads by its
// ReadTimeout (5 s) only, and neither Timeout nor a request's context can
// cut a call to an unresponsive Redis short. Share the client among the
// Limiter, Store and Events, and close it after them.
func NewClient(url string) (*redis.Client, error) {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("redisstore: %w", err)
	}
	opts.ContextTimeoutEnabled = true
	return redis.NewClient(opts), nil
}
