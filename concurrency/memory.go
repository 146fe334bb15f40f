package concurrency

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Memory is an in-process SlotLimiter with a native FIFO wait queue. It
// implements SlotLimiter, Waiter and Counter.
//
// State for a key exists only while the key holds a slot or has a waiter, so
// memory stays bounded by the turns in flight, however many keys pass
// through. A released slot goes straight to the oldest waiter that fits,
// without polling.
//
// The zero value is ready to use; NewMemory is the same thing. A Memory must
// not be copied after first use.
type Memory struct {
	mu    sync.Mutex
	keys  map[string]*keyState
	total int

	// Recycled, so that a grant allocates only its release func.
	free      []*keyState
	freeSlots []*slot
}

type keyState struct {
	key        string
	held       int
	head, tail *waiter
	waiting    int
}

// waiter is one caller parked in Acquire. ready is closed, under Memory.mu,
// once a slot has been counted for it.
type waiter struct {
	ready      chan struct{}
	limit      int
	slot       *slot // set before ready is closed
	prev, next *waiter
}

const maxFreeStates = 64

// NewMemory returns an empty in-memory limiter.
func NewMemory() *Memory { return &Memory{} }

func noop() {}

// TryAcquire takes a slot for key when it holds fewer than limit and nobody
// is queued for it (waiters go first). It never returns an error.
func (m *Memory) TryAcquire(ctx context.Context, key string, limit int) (release func(), ok bool, err error) {
	if limit <= 0 {
		return noop, true, nil
	}
	m.mu.Lock()
	ks := m.state(key)
	if ks.held >= limit || ks.waiting > 0 {
		m.forgetIfIdle(ks)
		m.mu.Unlock()
		return nil, false, nil
	}
	sl := m.grantLocked(ks)
	m.mu.Unlock()
	return sl.releaser(), true, nil
}

// Acquire waits for a slot for key in first-in, first-out order. See Waiter
// for the errors. A zero field of o takes its default: 100 waiters, 30 s;
// see WaitOptions for negative ones. A caller whose ctx ends or whose timeout fires just as a
// slot is handed to it gives the slot back to the next waiter and returns
// the error.
func (m *Memory) Acquire(ctx context.Context, key string, limit int, o WaitOptions) (release func(), err error) {
	if limit <= 0 {
		return noop, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	ks := m.state(key)
	if ks.held < limit && ks.waiting == 0 {
		sl := m.grantLocked(ks)
		m.mu.Unlock()
		return sl.releaser(), nil
	}
	maxWaiters, timeout := o.resolve()
	if ks.waiting >= maxWaiters {
		m.forgetIfIdle(ks)
		m.mu.Unlock()
		return nil, ErrQueueFull
	}
	w := &waiter{ready: make(chan struct{}), limit: limit}
	ks.push(w)
	m.mu.Unlock()

	var expired <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	select {
	case <-w.ready:
		return w.slot.releaser(), nil
	case <-ctx.Done():
		err = ctx.Err()
	case <-expired:
		err = ErrWaitTimeout
	}

	m.mu.Lock()
	select {
	case <-w.ready:
		// Handed a slot while giving up: pass it on rather than leak it.
		m.releaseLocked(w.slot)
	default:
		ks.remove(w)
		// Leaving may unblock those behind when the head of the queue had
		// a smaller limit.
		m.handOff(ks)
		m.forgetIfIdle(ks)
	}
	m.mu.Unlock()
	return nil, err
}

// InFlight reports how many slots key holds, counting slots handed to
// waiters that have not woken yet.
func (m *Memory) InFlight(key string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if ks := m.keys[key]; ks != nil {
		return ks.held
	}
	return 0
}

// Waiting reports how many callers are queued in Acquire for key.
func (m *Memory) Waiting(key string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if ks := m.keys[key]; ks != nil {
		return ks.waiting
	}
	return 0
}

// state returns the state of key, creating it. Callers hold m.mu and must
// call forgetIfIdle when they leave it unused.
func (m *Memory) state(key string) *keyState {
	if ks := m.keys[key]; ks != nil {
		return ks
	}
	if m.keys == nil {
		m.keys = make(map[string]*keyState)
	}
	var ks *keyState
	if n := len(m.free); n > 0 {
		ks = m.free[n-1]
		m.free[n-1] = nil
		m.free = m.free[:n-1]
	} else {
		ks = new(keyState)
	}
	ks.key = key
	m.keys[key] = ks
	return ks
}

func (m *Memory) forgetIfIdle(ks *keyState) {
	if ks.held > 0 || ks.waiting > 0 {
		return
	}
	delete(m.keys, ks.key)
	if len(m.free) < maxFreeStates {
		*ks = keyState{}
		m.free = append(m.free, ks)
	}
}

// handOff gives free slots to waiters from the head of the queue. It stops
// at the first waiter whose limit is reached, so that nobody is overtaken.
func (m *Memory) handOff(ks *keyState) {
	for w := ks.head; w != nil && ks.held < w.limit; w = ks.head {
		ks.remove(w)
		w.slot = m.grantLocked(ks)
		close(w.ready)
	}
}

// slot records one held slot. Slots are recycled; gen tells a release
// func whether its slot is still the one it was made for, which makes it
// idempotent without allocating a flag per grant.
type slot struct {
	m   *Memory
	ks  *keyState
	gen atomic.Uint64
}

const maxFreeSlots = 1024

// grantLocked counts a slot for ks.
func (m *Memory) grantLocked(ks *keyState) *slot {
	ks.held++
	m.total++
	var s *slot
	if n := len(m.freeSlots); n > 0 {
		s = m.freeSlots[n-1]
		m.freeSlots[n-1] = nil
		m.freeSlots = m.freeSlots[:n-1]
	} else {
		s = &slot{m: m}
	}
	s.ks = ks
	return s
}

// releaser returns the release func of a slot just granted. Only a release
// changes gen, and this grant has no release func yet, so the load is safe.
func (s *slot) releaser() func() {
	gen := s.gen.Load()
	return func() {
		if s.gen.CompareAndSwap(gen, gen+1) {
			s.m.mu.Lock()
			s.m.releaseLocked(s)
			s.m.mu.Unlock()
		}
	}
}

// releaseLocked returns s to its key, hands it on to the queue and recycles
// the bookkeeping.
func (m *Memory) releaseLocked(s *slot) {
	ks := s.ks
	ks.held--
	m.total--
	m.handOff(ks)
	m.forgetIfIdle(ks)
	s.ks = nil
	if len(m.freeSlots) < maxFreeSlots {
		m.freeSlots = append(m.freeSlots, s)
	}
}

func (ks *keyState) push(w *waiter) {
	w.prev = ks.tail
	if ks.tail != nil {
		ks.tail.next = w
	} else {
		ks.head = w
	}
	ks.tail = w
	ks.waiting++
}

func (ks *keyState) remove(w *waiter) {
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		ks.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		ks.tail = w.prev
	}
	w.prev, w.next = nil, nil
	ks.waiting--
}
