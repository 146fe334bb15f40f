package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Defaults for zero LimiterOptions fields.
const (
	DefaultPrefix       = "relay:"
	DefaultLeaseTTL     = 60 * time.Second
	DefaultPollInterval = 250 * time.Millisecond
	DefaultTimeout      = 2 * time.Second
)

var (
	// ErrUnavailable wraps every error caused by Redis failing (connection
	// refused, timeout, an error reply). The relay answers 503 for it.
	ErrUnavailable = errors.New("redisstore: Redis unavailable")
	// ErrClosed is returned by a Limiter or Events after Close.
	ErrClosed = errors.New("redisstore: closed")
)

// LimiterOptions configure a Limiter. A nil *LimiterOptions and zero fields
// take the defaults.
type LimiterOptions struct {
	// Prefix starts every Redis key and channel the Limiter uses. Use the
	// same prefix on every relay instance that shares the limits. "":
	// DefaultPrefix ("relay:"); keys are Prefix+"slot:{"+key+"}"...
	Prefix string

	// LeaseTTL is how long a slot outlives the last refresh by its holder:
	// the time a crashed instance's slots stay taken. 0: 60 s.
	LeaseTTL time.Duration
	// RefreshInterval is how often held leases are pushed forward. It is
	// capped at LeaseTTL/2 so that one late refresh does not lose a lease.
	// 0: LeaseTTL/3.
	RefreshInterval time.Duration

	// PollInterval is how often a waiter checks for a slot when no release
	// message woke it (a lease that expired, a lost message). Waiters that
	// have not checked for 8 poll intervals (2 s at least) are dropped from
	// the queue, so a crashed instance's waiters do not block the others.
	// 0: 250 ms.
	PollInterval time.Duration

	// Timeout bounds every Redis call; it is also how long TryAcquire can
	// take when Redis does not answer. go-redis honors it only on a client
	// with ContextTimeoutEnabled (NewClient sets it); otherwise its
	// ReadTimeout applies. 0: 2 s.
	Timeout time.Duration

	// FailOpen admits turns while Redis is unreachable, counting their
	// slots in this process only, so each instance still keeps the limit
	// on its own. false (the default): TryAcquire and Acquire return an
	// error wrapping ErrUnavailable, which the relay answers with 503.
	// Either way the failure is logged.
	FailOpen bool

	// ReleaseRetry is how long a release that failed (Redis unreachable)
	// is retried in the background. Past LeaseTTL the lease has expired
	// anyway. 0: LeaseTTL.
	ReleaseRetry time.Duration

	// Logger receives outages (at most one line per 10 s while they last),
	// recoveries, and leases lost to expiry. nil: slog.Default().
	Logger *slog.Logger
}

// Limiter is a concurrency.SlotLimiter whose slots live in Redis, so that
// several relay processes share one limit per key. It implements
// concurrency.SlotLimiter, concurrency.Waiter and concurrency.Counter, and
// scheduler.Batcher (batch.go): a turn's user and account slots and its
// sticky bindings (of a Store on the same client) in one round trip each
// way.
//
// A slot is a lease: a member of a sorted set per key whose score is its
// expiry. A Lua script drops expired leases and adds one when the key holds
// fewer than limit, in one atomic step. A background goroutine refreshes
// the leases this Limiter holds every RefreshInterval, so a long stream
// keeps its slot and a crashed process loses its slots within LeaseTTL.
//
// Acquire queues waiters in Redis in arrival order (by Redis's clock) and
// grants slots strictly in that order across all instances; TryAcquire
// never overtakes a queued waiter. Waiters are woken by a pub/sub message
// published when a slot is released and poll every PollInterval in case
// none comes. See the package documentation for the fairness this gives.
//
// Create one with NewLimiter and Close it when done; the client stays the
// caller's to close, after the Limiter.
type Limiter struct {
	c        redis.UniversalClient
	prefix   string
	ttl      time.Duration
	refresh  time.Duration
	poll     time.Duration
	stale    time.Duration
	timeout  time.Duration
	failOpen bool
	retryFor time.Duration
	log      *slog.Logger
	id       string // prefix of this Limiter's lease ids
	seq      atomic.Uint64

	mu     sync.Mutex
	keys   map[string]*keyState
	closed bool
	done   chan struct{}
	wg     sync.WaitGroup

	// subMu serializes (un)subscribing so that the subscription always
	// ends in the state the waiters want.
	subMu      sync.Mutex
	ps         *redis.PubSub
	subscribed map[string]bool // key -> subscribed

	retryMu  sync.Mutex
	retries  []pending // releases to retry
	retrying bool      // a retry goroutine runs

	outage outageLog
}

// keyState is this process's view of one key: the leases it holds, its
// fail-open local slots and its waiters. It exists while any is non-zero.
type keyState struct {
	names   names
	leases  map[*lease]struct{}
	local   int
	waiters map[*waiter]struct{}
}

// names are the Redis keys and channel of one limiter key.
type names struct {
	leases, queue, seen, channel string
}

// names builds the four names in one string and slices it: one allocation.
func (l *Limiter) names(key string) names {
	const queue, seen, free = ":queue", ":seen", ":free"
	base := len(l.prefix) + len("slot:{") + len(key) + len("}")
	var b strings.Builder
	b.Grow(4*base + len(queue) + len(seen) + len(free))
	for _, suffix := range [...]string{"", queue, seen, free} {
		b.WriteString(l.prefix)
		b.WriteString("slot:{")
		b.WriteString(key)
		b.WriteString("}")
		b.WriteString(suffix)
	}
	all := b.String()
	i := base
	n := names{leases: all[:i]}
	n.queue, i = all[i:i+base+len(queue)], i+base+len(queue)
	n.seen, i = all[i:i+base+len(seen)], i+base+len(seen)
	n.channel = all[i:]
	return n
}

// lease is one slot held by this process.
type lease struct {
	l     *Limiter
	key   string
	n     names
	id    string
	local bool // fail-open slot, not in Redis
	done  atomic.Bool
	lost  atomic.Bool // refresh found it gone
}

func (s *lease) release() { s.l.release(s) }

// NewLimiter returns a Limiter over client (a *redis.Client, ClusterClient
// or Ring) and starts its refresher. Redis 5 or later is required.
func NewLimiter(client redis.UniversalClient, o *LimiterOptions) *Limiter {
	if o == nil {
		o = &LimiterOptions{}
	}
	l := &Limiter{
		c:          client,
		prefix:     o.Prefix,
		ttl:        o.LeaseTTL,
		refresh:    o.RefreshInterval,
		poll:       o.PollInterval,
		timeout:    o.Timeout,
		failOpen:   o.FailOpen,
		retryFor:   o.ReleaseRetry,
		log:        o.Logger,
		id:         randomID(),
		keys:       make(map[string]*keyState),
		done:       make(chan struct{}),
		subscribed: make(map[string]bool),
	}
	if l.prefix == "" {
		l.prefix = DefaultPrefix
	}
	if l.ttl <= 0 {
		l.ttl = DefaultLeaseTTL
	}
	// Redis keeps milliseconds.
	l.ttl = max(l.ttl, time.Millisecond).Round(time.Millisecond)
	if l.refresh <= 0 {
		l.refresh = l.ttl / 3
	}
	l.refresh = min(l.refresh, l.ttl/2)
	if l.poll <= 0 {
		l.poll = DefaultPollInterval
	}
	l.stale = max(8*l.poll, 2*time.Second).Round(time.Millisecond)
	if l.timeout <= 0 {
		l.timeout = DefaultTimeout
	}
	if l.retryFor <= 0 {
		l.retryFor = l.ttl
	}
	if l.log == nil {
		l.log = slog.Default()
	}
	l.outage.log = l.log
	l.outage.failOpen = l.failOpen
	l.wg.Add(1)
	go l.refresher()
	return l
}

func randomID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (l *Limiter) newID() string {
	return l.id + ":" + strconv.FormatUint(l.seq.Add(1), 36)
}

func noop() {}

// op returns a context for one Redis call: ctx's values without its
// cancellation, so that a call whose result matters (a granted lease) is
// not cut off half way, bounded by Timeout.
func (l *Limiter) op(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), l.timeout)
}

func (l *Limiter) isClosed() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// state returns key's state, creating it. Callers hold l.mu.
func (l *Limiter) state(key string, n names) *keyState {
	ks := l.keys[key]
	if ks == nil {
		ks = &keyState{names: n}
		l.keys[key] = ks
	}
	return ks
}

// forgetIfIdle drops key's state when nothing uses it. Callers hold l.mu.
func (l *Limiter) forgetIfIdle(key string, ks *keyState) {
	if len(ks.leases) == 0 && ks.local == 0 && len(ks.waiters) == 0 {
		delete(l.keys, key)
	}
}

// InFlight reports how many slots this Limiter holds for key, local
// fail-open slots included; other processes' slots are not counted (see
// Count for those). It does not ask Redis.
func (l *Limiter) InFlight(key string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if ks := l.keys[key]; ks != nil {
		return len(ks.leases) + ks.local
	}
	return 0
}

// Waiting reports how many callers of this Limiter wait in Acquire for key.
func (l *Limiter) Waiting(key string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if ks := l.keys[key]; ks != nil {
		return len(ks.waiters)
	}
	return 0
}

// Count asks Redis how many unexpired leases key holds and how many
// waiters are queued for it, across all instances.
func (l *Limiter) Count(ctx context.Context, key string) (held, queued int, err error) {
	n := l.names(key)
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	v, err := countScript.Run(ctx, l.c, []string{n.leases, n.queue, n.seen}, l.stale.Milliseconds()).Int64Slice()
	if err != nil {
		return 0, 0, fmt.Errorf("%w: count %q: %w", ErrUnavailable, key, err)
	}
	return int(v[0]), int(v[1]), nil
}

// Close stops the refresher, the wake-up subscription and background
// release retries, and makes waiting Acquire calls return ErrClosed. It
// does not release held slots: release funcs still work (one attempt
// each), and leases not released expire after LeaseTTL. Close the Limiter
// after the relay has finished its turns (relay.Handler.Shutdown), and the
// Redis client after the Limiter.
func (l *Limiter) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	close(l.done)
	l.mu.Unlock()

	l.subMu.Lock()
	var err error
	if l.ps != nil {
		err = l.ps.Close()
	}
	l.subMu.Unlock()
	l.wg.Wait()
	return err
}
