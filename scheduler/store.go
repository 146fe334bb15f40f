package scheduler

import (
	"context"
	"hash/maphash"
	"strconv"
	"sync"
	"time"
)

// Store is a key-value store with expiry that holds sticky bindings. The
// default is in memory, private to the Scheduler; a shared store such as Redis lets
// several relay processes keep the same bindings.
//
// Keys are "resp:<response id>" for previous_response_id bindings and
// "sess:<len(api key id)>:<api key id>:<session key>" for session bindings.
// A session binding's value is an account ID; a response binding's value
// also holds the API key ID that created the response and when its
// stickiness ends, and lives for Scheduler.OwnerTTL (30 days by default).
// Values are opaque to a Store: keep them byte for byte. Implementations
// must be safe for concurrent use.
type Store interface {
	// Get returns the value of key; ok is false when it is absent or expired.
	Get(ctx context.Context, key string) (value string, ok bool, err error)
	// Set stores value under key for ttl; ttl <= 0 means no expiry.
	Set(ctx context.Context, key, value string, ttl time.Duration) error
	// Delete removes key; a missing key is not an error.
	Delete(ctx context.Context, key string) error
}

func responseKey(responseID string) string { return "resp:" + responseID }

// sessionKey prefixes the API key ID with its length so that no choice of
// API key ID and session key can produce another tenant's key.
func sessionKey(apiKeyID, session string) string {
	return "sess:" + strconv.Itoa(len(apiKeyID)) + ":" + apiKeyID + ":" + session
}

// memoryStoreMaxKeys is how many keys a memoryStore holds at most (its doc
// gives the consequences).
const memoryStoreMaxKeys = 1 << 20

const (
	memShards = 32
	// Each Set looks at this many other keys and drops the expired ones, so
	// expired keys stay a bounded fraction of the map without a background
	// goroutine.
	memSweep = 4
	// On overflow, the oldest-written among this many sampled keys goes
	// (an expired one first). Oldest-written rather than soonest to expire:
	// a fresh session binding (StickyTTL) must not go before an owner
	// record written weeks ago (OwnerTTL).
	memEvictSample = 8
)

// memoryStore is the default Store, in memory and private to one
// Scheduler. Expired keys are dropped when read and by a small sweep on
// every Set; past maxKeys, Set evicts the keys written longest ago
// (sampled). It starts no goroutine and is safe for concurrent use.
type memoryStore struct {
	seed        maphash.Seed
	maxPerShard int
	now         func() time.Time
	shards      [memShards]memShard
}

type memShard struct {
	mu sync.Mutex
	m  map[string]memEntry
	_  [48]byte // one shard per cache line, so shards do not contend
}

type memEntry struct {
	value   string
	expires int64 // unix nanoseconds; 0 never
	written int64 // unix nanoseconds
}

func newMemoryStore(maxKeys int, now func() time.Time) *memoryStore {
	s := &memoryStore{seed: maphash.MakeSeed(), maxPerShard: max(1, maxKeys/memShards), now: now}
	for i := range s.shards {
		s.shards[i].m = make(map[string]memEntry)
	}
	return s
}

func (s *memoryStore) shard(key string) *memShard {
	return &s.shards[maphash.String(s.seed, key)%memShards]
}

// Get implements Store.
func (s *memoryStore) Get(_ context.Context, key string) (string, bool, error) {
	sh := s.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e, ok := sh.m[key]
	if !ok {
		return "", false, nil
	}
	if e.expires != 0 && e.expires <= s.now().UnixNano() {
		delete(sh.m, key)
		return "", false, nil
	}
	return e.value, true, nil
}

// Set implements Store.
func (s *memoryStore) Set(_ context.Context, key, value string, ttl time.Duration) error {
	now := s.now().UnixNano()
	var exp int64
	if ttl > 0 {
		exp = now + int64(ttl)
	}
	sh := s.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.m[key] = memEntry{value: value, expires: exp, written: now}

	// Map iteration starts at a random position, so these are samples.
	n := 0
	for k, e := range sh.m {
		if n++; n > memSweep {
			break
		}
		if e.expires != 0 && e.expires <= now {
			delete(sh.m, k)
		}
	}
	for len(sh.m) > s.maxPerShard {
		sh.evict(key, now)
	}
	return nil
}

// evict drops a sampled key: an expired one, else the one written longest
// ago, sparing keep, the key just written.
func (sh *memShard) evict(keep string, now int64) {
	var (
		victim string
		found  bool
		best   int64
		n      int
	)
	for k, e := range sh.m {
		if k == keep {
			continue
		}
		age := e.written
		if e.expires != 0 && e.expires <= now {
			age = -1 << 63 // expired: before anything written
		}
		if !found || age < best {
			victim, best, found = k, age, true
		}
		if n++; n >= memEvictSample {
			break
		}
	}
	if !found {
		return
	}
	delete(sh.m, victim)
}

// Delete implements Store.
func (s *memoryStore) Delete(_ context.Context, key string) error {
	sh := s.shard(key)
	sh.mu.Lock()
	delete(sh.m, key)
	sh.mu.Unlock()
	return nil
}

// len counts stored keys, expired ones included (for tests).
func (s *memoryStore) len() int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}
