package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/relaykit/responsesrelay/concurrency"
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
// concurrency.SlotLimiter, concurrency.Waiter and concurrency.Counter.
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

// keyOfChannel inverts names(key).channel.
func (l *Limiter) keyOfChannel(ch string) (string, bool) {
	pre, suf := l.prefix+"slot:{", "}:free"
	if len(ch) < len(pre)+len(suf) || ch[:len(pre)] != pre || ch[len(ch)-len(suf):] != suf {
		return "", false
	}
	return ch[len(pre) : len(ch)-len(suf)], true
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

// waiter is a caller parked in Acquire.
type waiter struct {
	wake chan struct{} // buffered 1: a pending wake-up is never lost
}

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

// TryAcquire takes a slot for key when Redis holds fewer than limit leases
// for it and nobody waits in Acquire. A limit <= 0 always succeeds without
// asking Redis. When Redis fails, the error wraps ErrUnavailable; with
// FailOpen a local slot is granted instead when this process holds fewer
// than limit for key.
//
// ctx's cancellation does not interrupt the Redis call (Timeout bounds it),
// so a granted lease is never lost on the way.
func (l *Limiter) TryAcquire(ctx context.Context, key string, limit int) (release func(), ok bool, err error) {
	if limit <= 0 {
		return noop, true, nil
	}
	if l.isClosed() {
		return nil, false, ErrClosed
	}
	n := l.names(key)
	id := l.newID()
	res, err := l.acquire(ctx, n, id, limit, "", 0)
	if err != nil {
		err = l.failed("acquire", key, err)
		l.forget(key, n, id, err)
		if l.failOpen {
			if ls := l.grantLocal(key, n, limit); ls != nil {
				return ls.release, true, nil
			}
			return nil, false, nil
		}
		return nil, false, err
	}
	if res != resGranted {
		return nil, false, nil
	}
	return l.hold(key, n, id).release, true, nil
}

// Acquire waits for a slot for key (see concurrency.Waiter). It returns
// ErrQueueFull at once when o.MaxWaiters callers, on all instances, already
// wait for key; concurrency.ErrWaitTimeout after o.Timeout; ctx.Err() when
// ctx ends; ErrClosed when the Limiter is closed meanwhile; and an error
// wrapping ErrUnavailable when Redis fails (unless FailOpen, which then
// grants a local slot as TryAcquire does, or keeps waiting for one).
func (l *Limiter) Acquire(ctx context.Context, key string, limit int, o concurrency.WaitOptions) (release func(), err error) {
	if limit <= 0 {
		return noop, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if l.isClosed() {
		return nil, ErrClosed
	}
	var expired <-chan time.Time
	if o.Timeout > 0 {
		t := time.NewTimer(o.Timeout)
		defer t.Stop()
		expired = t.C
	}
	n := l.names(key)
	// The lease id doubles as the ticket until an attempt fails: the
	// lease id of a failed attempt is removed in the background, so the
	// next attempt needs a new one.
	ticket := l.newID()
	id := ticket
	res, err := l.acquire(ctx, n, id, limit, ticket, max(o.MaxWaiters, 0))
	switch {
	case err == nil && res == resGranted:
		return l.hold(key, n, id).release, nil
	case err == nil && res == resFull:
		return nil, concurrency.ErrQueueFull
	case err != nil:
		err = l.failed("acquire", key, err)
		l.forget(key, n, id, err)
		if !l.failOpen {
			return nil, err
		}
		if ls := l.grantLocal(key, n, limit); ls != nil {
			return ls.release, nil
		}
		id = l.newID()
	}

	w := &waiter{wake: make(chan struct{}, 1)}
	l.join(key, n, w)
	defer l.leave(key, w)
	// Check once more: a release published before the subscription took
	// effect was missed.
	w.wake <- struct{}{}
	poll := time.NewTicker(l.poll)
	defer poll.Stop()
	for {
		select {
		case <-w.wake:
		case <-poll.C:
		case <-ctx.Done():
			l.giveUp(ctx, n, ticket)
			return nil, ctx.Err()
		case <-expired:
			l.giveUp(ctx, n, ticket)
			return nil, concurrency.ErrWaitTimeout
		case <-l.done:
			l.giveUp(ctx, n, ticket)
			return nil, ErrClosed
		}
		res, err := l.acquire(ctx, n, id, limit, ticket, -1)
		if err != nil {
			err = l.failed("acquire", key, err)
			l.forget(key, n, id, err)
			id = l.newID()
			if !l.failOpen {
				l.giveUp(ctx, n, ticket)
				return nil, err
			}
			if ls := l.grantLocal(key, n, limit); ls != nil {
				l.giveUp(ctx, n, ticket)
				return ls.release, nil
			}
			continue
		}
		if res == resGranted {
			return l.hold(key, n, id).release, nil
		}
	}
}

// acquire runs acquireScript.
func (l *Limiter) acquire(ctx context.Context, n names, id string, limit int, ticket string, maxWaiters int) (int64, error) {
	ctx, cancel := l.op(ctx)
	defer cancel()
	res, err := acquireScript.Run(ctx, l.c, []string{n.leases, n.queue, n.seen},
		id, limit, l.ttl.Milliseconds(), ticket, maxWaiters, l.stale.Milliseconds(), n.channel).Int64()
	if err == nil {
		l.outage.ok()
	}
	return res, err
}

// giveUp removes a waiter's ticket, best effort: a ticket left behind goes
// stale and is dropped by the next caller after 8 poll intervals.
func (l *Limiter) giveUp(ctx context.Context, n names, ticket string) {
	ctx, cancel := l.op(ctx)
	defer cancel()
	if err := leaveScript.Run(ctx, l.c, []string{n.queue, n.seen}, ticket, n.channel).Err(); err != nil {
		l.log.Debug("redisstore: removing a waiter's ticket failed; it will go stale", "error", err)
	}
}

// failed logs a Redis failure and wraps it.
func (l *Limiter) failed(op, key string, err error) error {
	l.outage.failed(op, key, err)
	return fmt.Errorf("%w: %s %q: %w", ErrUnavailable, op, key, err)
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

// hold records a lease granted in Redis, for refreshing.
func (l *Limiter) hold(key string, n names, id string) *lease {
	ls := &lease{l: l, key: key, n: n, id: id}
	l.mu.Lock()
	ks := l.state(key, n)
	if ks.leases == nil {
		ks.leases = make(map[*lease]struct{})
	}
	ks.leases[ls] = struct{}{}
	l.mu.Unlock()
	return ls
}

// grantLocal takes a fail-open slot when this process holds fewer than
// limit for key.
func (l *Limiter) grantLocal(key string, n names, limit int) *lease {
	l.mu.Lock()
	defer l.mu.Unlock()
	ks := l.state(key, n)
	if len(ks.leases)+ks.local >= limit {
		l.forgetIfIdle(key, ks)
		return nil
	}
	ks.local++
	return &lease{l: l, key: key, local: true}
}

// release gives a slot back once. The local count drops at once; the lease
// leaves Redis now, or in the background when Redis fails, or expires.
func (l *Limiter) release(ls *lease) {
	if !ls.done.CompareAndSwap(false, true) {
		return
	}
	l.mu.Lock()
	ks := l.keys[ls.key]
	if ks != nil {
		if ls.local {
			ks.local--
		} else {
			delete(ks.leases, ls)
		}
		l.forgetIfIdle(ls.key, ks)
	}
	l.mu.Unlock()
	if ls.local {
		return
	}
	if err := l.releaseOnce(context.Background(), ls.n, ls.id); err != nil {
		l.outage.failed("release", ls.key, err)
		l.retryRelease(ls.key, ls.n, ls.id)
	}
}

func (l *Limiter) releaseOnce(ctx context.Context, n names, id string) error {
	ctx, cancel := l.op(ctx)
	defer cancel()
	err := releaseScript.Run(ctx, l.c, []string{n.leases, n.queue}, id, n.channel).Err()
	if err == nil {
		l.outage.ok()
	}
	return err
}

// forget removes, in the background, the lease of an acquire that failed
// after the script may have run (a timeout, a connection cut mid-reply).
func (l *Limiter) forget(key string, n names, id string, err error) {
	if maybeSent(err) {
		l.retryRelease(key, n, id)
	}
}

// maybeSent reports whether a command that failed with err may still have
// run in Redis.
func maybeSent(err error) bool {
	var op *net.OpError
	var rerr redis.Error
	switch {
	case errors.As(err, &op) && op.Op == "dial",
		errors.Is(err, redis.ErrClosed),
		errors.Is(err, redis.ErrPoolTimeout),
		errors.As(err, &rerr): // Redis answered: the script failed before writing
		return false
	}
	return true
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
// after the relay has finished its turns (relay.Handler.Wait), and the
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

// outageLog logs Redis failures at most once per outageLogEvery while they
// last, and the first success after them.
type outageLog struct {
	log      *slog.Logger
	failOpen bool
	down     atomic.Bool

	mu         sync.Mutex
	last       time.Time
	suppressed int
}

const outageLogEvery = 10 * time.Second

func (o *outageLog) failed(op, key string, err error) {
	o.down.Store(true)
	o.mu.Lock()
	now := time.Now()
	if !o.last.IsZero() && now.Sub(o.last) < outageLogEvery {
		o.suppressed++
		o.mu.Unlock()
		return
	}
	n := o.suppressed
	o.last, o.suppressed = now, 0
	o.mu.Unlock()
	mode := "failing closed: turns get 503"
	if o.failOpen {
		mode = "failing open: slots are counted in this process only"
	}
	o.log.Error("redisstore: Redis unavailable, "+mode, "op", op, "key", key, "error", err, "similar_errors_not_logged", n)
}

func (o *outageLog) ok() {
	if !o.down.Load() || !o.down.CompareAndSwap(true, false) {
		return
	}
	o.mu.Lock()
	n := o.suppressed
	o.last, o.suppressed = time.Time{}, 0
	o.mu.Unlock()
	o.log.Info("redisstore: Redis reachable again", "similar_errors_not_logged", n)
}
