package conversation

import (
	"context"
	"sync"
	"time"
)

// Defaults of zero Memory fields.
const (
	defaultMaxBytes = 256 << 20
	defaultTTL      = 24 * time.Hour
)

// Memory is an in-memory Store bounded by bytes and age. A zero Memory is
// valid: it keeps at most 256 MiB of records, each for 24 hours; when a
// new record does not fit, the oldest are evicted first. It must not be
// copied after first use.
type Memory struct {
	// MaxBytes bounds the bytes kept: each record with its keys and about
	// 160 bytes of bookkeeping. A record larger than MaxBytes is not
	// kept. 0: 256 MiB; negative: nothing is kept.
	MaxBytes int64
	// TTL is how long a record is kept after Put. 0: 24 h; negative: until
	// evicted for room.
	TTL time.Duration

	now func() time.Time // the clock; nil: time.Now (tests set it)

	mu    sync.Mutex
	items map[memKey]*memEntry
	// oldest and newest end the list of entries in Put order, which is
	// also expiry order (one TTL for all).
	oldest, newest *memEntry
	bytes          int64
}

type memKey struct{ apiKey, response string }

type memEntry struct {
	key        memKey
	rec        []byte
	size       int64
	expires    time.Time // zero: never
	prev, next *memEntry // older, newer
}

// entryOverhead approximates what an entry costs beyond its record and
// keys (the entry and its map slot).
const entryOverhead = 160

func (m *Memory) clock() time.Time {
	if m.now != nil {
		return m.now()
	}
	return time.Now()
}

func (m *Memory) maxBytes() int64 {
	if m.MaxBytes == 0 {
		return defaultMaxBytes
	}
	return m.MaxBytes
}

// Get implements Store.
func (m *Memory) Get(_ context.Context, apiKeyID, responseID string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.items[memKey{apiKeyID, responseID}]
	if !ok {
		return nil, ErrNotFound
	}
	if !e.expires.IsZero() && !m.clock().Before(e.expires) {
		m.removeLocked(e)
		return nil, ErrNotFound
	}
	return e.rec, nil
}

// Put implements Store.
func (m *Memory) Put(_ context.Context, apiKeyID, responseID string, record []byte) error {
	limit := m.maxBytes()
	size := int64(entryOverhead + len(apiKeyID) + len(responseID) + len(record))
	k := memKey{apiKeyID, responseID}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.items == nil {
		m.items = make(map[memKey]*memEntry)
	}
	if e, ok := m.items[k]; ok {
		m.removeLocked(e)
	}
	if limit < 0 || size > limit {
		return nil
	}
	now := m.clock()
	for m.bytes+size > limit && m.oldest != nil {
		m.removeLocked(m.oldest)
	}
	// Expired records at the old end go first: they would be evicted anyway.
	for e := m.oldest; e != nil && !e.expires.IsZero() && !now.Before(e.expires); e = m.oldest {
		m.removeLocked(e)
	}
	e := &memEntry{key: k, rec: record, size: size, prev: m.newest}
	switch ttl := m.TTL; {
	case ttl == 0:
		e.expires = now.Add(defaultTTL)
	case ttl > 0:
		e.expires = now.Add(ttl)
	}
	if m.newest != nil {
		m.newest.next = e
	} else {
		m.oldest = e
	}
	m.newest = e
	m.items[k] = e
	m.bytes += size
	return nil
}

// Delete implements Store.
func (m *Memory) Delete(_ context.Context, apiKeyID, responseID string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.items[memKey{apiKeyID, responseID}]; ok {
		m.removeLocked(e)
	}
	return nil
}

// Bytes reports the bytes kept, as MaxBytes counts them.
func (m *Memory) Bytes() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.bytes
}

func (m *Memory) removeLocked(e *memEntry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		m.oldest = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		m.newest = e.prev
	}
	e.prev, e.next = nil, nil
	delete(m.items, e.key)
	m.bytes -= e.size
}
