package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/relaykit/responsesrelay/conversation"
)

// ConversationOptions configure a Conversations store. A nil
// *ConversationOptions and zero fields take the defaults.
type ConversationOptions struct {
	// Prefix starts every key. "": DefaultPrefix ("relay:"), so the record
	// of response resp_1 made under API key k-1 is the string key
	// "relay:conv:k-1:resp_1".
	Prefix string
	// TTL is how long a record is kept after its Put (PX on the key). 0:
	// 24 h. A negative TTL panics in NewConversations: the TTL is what
	// bounds the records in Redis.
	TTL time.Duration
}

// Conversations is a conversation.Store in Redis: one string key per
// record, Prefix+"conv:"+apiKeyID+":"+responseID, holding the record's
// bytes as the relay wrote them, with a PX expiry of the TTL. Get is GET, Put is SET ... PX, Delete
// is DEL, so every relay instance sharing the server sees the records of
// all, and Redis drops them at their TTL. A ':' or '%' in the API key id
// is percent-encoded in the key, so that no key id and response id pair
// can name another pair's record: the key alone scopes a record to its
// API key, and the value is never parsed.
//
// Records hold user content (prompts, answers, tool calls) and take
// Redis memory: plan for the records of one TTL of traffic, turns per day
// × TTL in days × the mean record size (a few KiB to a few hundred KiB with
// long contexts). Run Redis with enough maxmemory for that: with
// maxmemory-policy noeviction, as the Limiter requires, a full Redis
// refuses Puts (the relay then has no record to fail a conversation over
// with) rather than evicting leases.
type Conversations struct {
	c      redis.UniversalClient
	prefix string
	ttl    time.Duration
}

var _ conversation.Store = (*Conversations)(nil)

// defaultConversationTTL is the TTL of a zero ConversationOptions.TTL, as
// conversation.Memory's.
const defaultConversationTTL = 24 * time.Hour

// NewConversations returns a Conversations store over client. It starts
// nothing; the client stays the caller's to close.
func NewConversations(client redis.UniversalClient, o *ConversationOptions) *Conversations {
	var opt ConversationOptions
	if o != nil {
		opt = *o
	}
	switch {
	case opt.TTL < 0:
		panic("redisstore: negative ConversationOptions.TTL; the TTL is what bounds the records")
	case opt.TTL == 0:
		opt.TTL = defaultConversationTTL
	}
	if opt.Prefix == "" {
		opt.Prefix = DefaultPrefix
	}
	return &Conversations{c: client, prefix: opt.Prefix + "conv:", ttl: opt.TTL}
}

// keyEscaper makes the API key id free of the separator.
var keyEscaper = strings.NewReplacer("%", "%25", ":", "%3A")

func (s *Conversations) key(apiKeyID, responseID string) string {
	return s.prefix + keyEscaper.Replace(apiKeyID) + ":" + responseID
}

// Get implements conversation.Store: GET, the bytes as Put stored them.
// Errors of Redis wrap ErrUnavailable.
func (s *Conversations) Get(ctx context.Context, apiKeyID, responseID string) ([]byte, error) {
	v, err := s.c.Get(ctx, s.key(apiKeyID, responseID)).Bytes()
	switch {
	case errors.Is(err, redis.Nil):
		return nil, conversation.ErrNotFound
	case err != nil:
		return nil, fmt.Errorf("%w: get conversation record: %w", ErrUnavailable, err)
	}
	return v, nil
}

// Put implements conversation.Store: SET with PX of the TTL, replacing
// any record of the same key and response id.
func (s *Conversations) Put(ctx context.Context, apiKeyID, responseID string, record []byte) error {
	ms := max(1, (s.ttl+time.Millisecond-1)/time.Millisecond)
	if err := s.c.Do(ctx, "SET", s.key(apiKeyID, responseID), record, "PX", int64(ms)).Err(); err != nil {
		return fmt.Errorf("%w: put conversation record: %w", ErrUnavailable, err)
	}
	return nil
}

// Delete implements conversation.Store.
func (s *Conversations) Delete(ctx context.Context, apiKeyID, responseID string) error {
	if err := s.c.Del(ctx, s.key(apiKeyID, responseID)).Err(); err != nil {
		return fmt.Errorf("%w: delete conversation record: %w", ErrUnavailable, err)
	}
	return nil
}
