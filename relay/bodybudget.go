package relay

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"
)

// defaultBodyMemory is the Handler's bound on request body bytes in
// memory before a user slot covers them, across all users.
const defaultBodyMemory = 256 << 20

// defaultBodyMemoryPerUser is the per-user bound in request bodies of
// MaxBodyBytes: one gzip body (see reserve) and room for small ones.
const defaultBodyMemoryPerUser = 4

// A body is read, decoded and parsed before the user's concurrency slot is
// taken (the slot's wait needs the parsed request), so without a bound a
// user limited to 2 turns could still make the relay hold any number of
// bodies at once. bodyBudget is that bound: bytes are reserved before the
// first byte is read, and given back once the user slot covers the body
// (the user's concurrency then bounds what it holds) or, for a user
// without a concurrency limit, when the turn ends.
//
// A body's decoded size is unknown until decoded, and reserving while
// reading would let many readers each hold part of the budget while
// waiting for the rest, none finishing. So each body reserves its worst
// case at once, then shrinks the reservation to what it kept:
// Content-Length for a plain body (MaxBodyBytes when unknown), plus
// MaxBodyBytes for the decoded copy of an encoded one. A reservation larger
// than a budget is cut to the whole budget, so one body always fits.
type bodyBudget struct {
	total   *semaphore.Weighted // nil: no total bound
	totalN  int64
	perUser int64 // 0: no per-user bound

	mu    sync.Mutex
	users map[string]*userBodies
	// free keeps entries of users who hold nothing, for the next user:
	// an entry with no reference holds no bytes and has no waiter, so its
	// semaphore is as new. Two allocations a request saved.
	free []*userBodies

	// held and peak count reserved bytes, waiting the reservations
	// waiting; for tests.
	held, peak, waiting atomic.Int64
}

// maxFreeUserBodies bounds the entries kept for reuse.
const maxFreeUserBodies = 64

type userBodies struct {
	sem  *semaphore.Weighted
	refs int
}

func newBodyBudget(total, perUser int64) *bodyBudget {
	b := &bodyBudget{totalN: total, perUser: perUser, users: map[string]*userBodies{}}
	if total > 0 {
		b.total = semaphore.NewWeighted(total)
	}
	return b
}

// bodyLease is one body's reservation. Its methods are safe on nil (no
// budget) and release is idempotent.
type bodyLease struct {
	b        *bodyBudget
	u        *userBodies
	user     string
	userN    int64 // held from u.sem
	totalN   int64 // held from b.total
	released bool
}

var (
	errBodyBudgetUser  = errors.New("relay: per-user body memory budget exhausted")
	errBodyBudgetTotal = errors.New("relay: body memory budget exhausted")
)

// reserve takes n bytes for user from both budgets, waiting at most
// timeout (<= 0: as long as ctx lasts). The per-user budget is taken
// first, always, so two reservations never wait on each other crosswise.
func (b *bodyBudget) reserve(ctx context.Context, user string, n int64, timeout time.Duration) (*bodyLease, error) {
	if b == nil || (b.total == nil && b.perUser <= 0) {
		return nil, nil
	}
	l := &bodyLease{b: b, user: user}
	w := budgetWait{ctx: ctx, timeout: timeout, waiting: &b.waiting}
	defer w.done()
	if b.perUser > 0 {
		b.mu.Lock()
		u := b.users[user]
		if u == nil {
			if n := len(b.free); n > 0 {
				u, b.free = b.free[n-1], b.free[:n-1]
			} else {
				u = &userBodies{sem: semaphore.NewWeighted(b.perUser)}
			}
			b.users[user] = u
		}
		u.refs++
		b.mu.Unlock()
		l.u = u
		l.userN = min(n, b.perUser)
		if err := w.acquire(u.sem, l.userN); err != nil {
			l.userN = 0
			l.release()
			return nil, waitErr(ctx, errBodyBudgetUser)
		}
	}
	if b.total != nil {
		l.totalN = min(n, b.totalN)
		if err := w.acquire(b.total, l.totalN); err != nil {
			l.totalN = 0
			l.release()
			return nil, waitErr(ctx, errBodyBudgetTotal)
		}
	}
	b.note(max(l.userN, l.totalN))
	return l, nil
}

// budgetWait is one reservation's wait. Its timer is made only when a
// budget is short: the common case takes both without waiting.
type budgetWait struct {
	ctx, wctx context.Context
	cancel    context.CancelFunc
	timeout   time.Duration
	waiting   *atomic.Int64
}

func (w *budgetWait) acquire(sem *semaphore.Weighted, n int64) error {
	if sem.TryAcquire(n) {
		return nil
	}
	if w.wctx == nil {
		w.wctx = w.ctx
		if w.timeout > 0 {
			w.wctx, w.cancel = context.WithTimeout(w.ctx, w.timeout)
		}
	}
	w.waiting.Add(1)
	defer w.waiting.Add(-1)
	return sem.Acquire(w.wctx, n)
}

func (w *budgetWait) done() {
	if w.cancel != nil {
		w.cancel()
	}
}

// waitErr is the client's context error when the client left, else full.
func waitErr(ctx context.Context, full error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return full
}

func (b *bodyBudget) note(delta int64) {
	h := b.held.Add(delta)
	for p := b.peak.Load(); h > p && !b.peak.CompareAndSwap(p, h); p = b.peak.Load() {
	}
}

// shrink gives back what the body no longer needs, keeping n bytes.
func (l *bodyLease) shrink(n int64) {
	if l == nil || l.released {
		return
	}
	var back int64
	if l.u != nil && l.userN > n {
		l.u.sem.Release(l.userN - n)
		back = l.userN - n
		l.userN = n
	}
	if l.b.total != nil && l.totalN > n {
		l.b.total.Release(l.totalN - n)
		back = max(back, l.totalN-n)
		l.totalN = n
	}
	l.b.note(-back)
}

// release gives everything back.
func (l *bodyLease) release() {
	if l == nil || l.released {
		return
	}
	l.shrink(0)
	l.released = true
	if l.u != nil {
		l.b.mu.Lock()
		if l.u.refs--; l.u.refs == 0 {
			delete(l.b.users, l.user)
			if len(l.b.free) < maxFreeUserBodies {
				l.b.free = append(l.b.free, l.u)
			}
		}
		l.b.mu.Unlock()
	}
}

// bodyBudgetAnswer is the client's answer when no budget could be had:
// 429 when the user's own bodies fill theirs, as for a user slot; 503
// when all users' bodies fill the relay's.
func bodyBudgetAnswer(err error) error {
	switch {
	case errors.Is(err, errBodyBudgetUser):
		return &APIError{Status: http.StatusTooManyRequests, Type: "rate_limit_error",
			Message: "Too many request bodies in flight, please retry later", RetryAfter: time.Second}
	case errors.Is(err, errBodyBudgetTotal):
		return &APIError{Status: http.StatusServiceUnavailable, Type: "server_error",
			Message: "The server is busy reading other requests, please retry later", RetryAfter: time.Second}
	}
	return errClientGone
}
