package redisstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/relaykit/responsesrelay/scheduler"
)

// StoreOptions configure a Store. A nil *StoreOptions and zero fields take
// the defaults.
type StoreOptions struct {
	// Prefix starts every key; the scheduler's key follows "sticky:". "":
	// DefaultPrefix ("relay:"), so a binding of response resp_1 is the
	// string key "relay:sticky:resp:resp_1".
	Prefix string
}

// Store is a scheduler.Store in Redis: GET, SET with PX, DEL. Sticky
// sessions and previous_response_id bindings made by one relay instance
// are then seen by all, and so is who created each response: another API
// key's previous_response_id is refused by every instance. Values are
// stored as the scheduler writes them. A response binding lives for
// Scheduler.OwnerTTL (30 days by default), about 200 bytes of Redis memory
// per response.
type Store struct {
	c      redis.UniversalClient
	prefix string
}

var _ scheduler.Store = (*Store)(nil)

// NewStore returns a Store over client. It starts nothing; the client stays
// the caller's to close.
func NewStore(client redis.UniversalClient, o *StoreOptions) *Store {
	prefix := DefaultPrefix
	if o != nil && o.Prefix != "" {
		prefix = o.Prefix
	}
	return &Store{c: client, prefix: prefix + "sticky:"}
}

// Get implements scheduler.Store.
func (s *Store) Get(ctx context.Context, key string) (string, bool, error) {
	v, err := s.c.Get(ctx, s.prefix+key).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return "", false, nil
	case err != nil:
		return "", false, fmt.Errorf("%w: get sticky binding: %w", ErrUnavailable, err)
	}
	return v, true, nil
}

// Set implements scheduler.Store. A ttl below a millisecond is rounded up
// to one; ttl <= 0 stores without expiry.
func (s *Store) Set(ctx context.Context, key, value string, ttl time.Duration) error {
	var err error
	if ttl > 0 {
		ms := max(1, (ttl+time.Millisecond-1)/time.Millisecond)
		err = s.c.Do(ctx, "SET", s.prefix+key, value, "PX", int64(ms)).Err()
	} else {
		err = s.c.Set(ctx, s.prefix+key, value, 0).Err()
	}
	if err != nil {
		return fmt.Errorf("%w: set sticky binding: %w", ErrUnavailable, err)
	}
	return nil
}

// Delete implements scheduler.Store.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := s.c.Del(ctx, s.prefix+key).Err(); err != nil {
		return fmt.Errorf("%w: delete sticky binding: %w", ErrUnavailable, err)
	}
	return nil
}
