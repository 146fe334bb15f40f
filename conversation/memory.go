package conversation

import (
	"container/list"
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
	// 160 bytes of bookkeeping. A record larger than MaxBytes is not kept. 0: 256 MiB; negative: nothing is
	// kept.
	MaxBytes int64
	// TTL is how long a record is kept after Put. 0: 24 h; negative: until
	// evicted for room.
	TTL time.Duration
	now func() time.Time // the clock; nil: time.Now (tests set it)

	mu    sync.Mutex
	items map[memKey]*list.Element
	order list.List // of *memEntry, oldest first
	bytes int64
}

type memKey struct{ apiKey, response string }

type memEntry struct {
	key     memKey
	rec     []byte
	size    int64
	expires time.Time // zero: never
}

// entryOverhead approximates what an entry costs beyond its record and
// keys (entry, map slot, list element).
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
	el, ok := m.items[memKey{apiKeyID, responseID}]
	if !ok {
		return nil, ErrNotFound
	}
	e := el.Value.(*memEntry)
	if !e.expires.IsZero() && !m.clock().Before(e.expires) {
		m.removeLocked(el)
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
		m.items = make(map[memKey]*list.Element)
	}
	if el, ok := m.items[k]; ok {
		m.removeLocked(el)
	}
	if limit < 0 || size > limit {
		return nil
	}
	now := m.clock()
	for m.bytes+size > limit && m.order.Len() > 0 {
		m.removeLocked(m.order.Front())
	}
	// Expired records at the front go first: they would be evicted anyway.
	for el := m.order.Front(); el != nil; el = m.order.Front() {
		e := el.Value.(*memEntry)
		if e.expires.IsZero() || now.Before(e.expires) {
			break
		}
		m.removeLocked(el)
	}
	e := &memEntry{key: k, rec: record, size: size}
	switch ttl := m.TTL; {
	case ttl == 0:
		e.expires = now.Add(defaultTTL)
	case ttl > 0:
		e.expires = now.Add(ttl)
	}
	m.items[k] = m.order.PushBack(e)
	m.bytes += size
	return nil
}

// Delete implements Store.
func (m *Memory) Delete(_ context.Context, apiKeyID, responseID string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if el, ok := m.items[memKey{apiKeyID, responseID}]; ok {
		m.removeLocked(el)
	}
	return nil
}

// Bytes reports the bytes kept, as MaxBytes counts them.
func (m *Memory) Bytes() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.bytes
}

func (m *Memory) removeLocked(el *list.Element) {
	e := m.order.Remove(el).(*memEntry)
	delete(m.items, e.key)
	m.bytes -= e.size
}
