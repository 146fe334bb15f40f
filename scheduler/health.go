package scheduler

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relaykit/responsesrelay/internal/hookcall"
)

// Passive health tuning beyond HealthPolicy; Observe documents the
// resulting contract.
const (
	// ewmaAlpha weighs the newest outcome in the error-rate and TTFT
	// averages: about the last ten outcomes matter, and four failures in a
	// row from a clean start cross failingErrorRate.
	ewmaAlpha = 0.2
	// Below errFloor the error rate counts as zero, which keeps Select's
	// loop cheap for healthy accounts.
	errFloor = 0.01

	failingErrorRate = 0.5 // sticky escape: error rate above this

	// A cooldown extended by less than this emits no new event, so the 429s
	// of one account's in-flight turns make one event, not one each.
	eventSlack = time.Second
)

// hotStats is what Select's loop reads of an account's health: 32 bytes,
// allocated side by side (see statsSlab).
type hotStats struct {
	inflight  atomic.Int64
	coolUntil atomic.Int64  // unix nanoseconds; <= now means not cooling
	errRate   atomic.Uint64 // float64 bits of the error-rate EWMA
	ttft      atomic.Int64  // TTFT EWMA in nanoseconds; 0 unknown
}

// accountStats is the health of one account ID. Select reads the atomics
// without locking; Observe serializes its updates with mu.
type accountStats struct {
	*hotStats
	errAt atomic.Int64 // unix nanoseconds of the last errRate update

	mu         sync.Mutex
	failures   int    // consecutive failures (5xx, 408, connection, stream)
	limited    int    // consecutive 429s without a success
	coolKind   string // event kind of the current cooldown
	coolReason string // its human-readable cause, for Snapshot
	penalized  bool   // a cooldown event was sent and no recovered since

	// The last outcome Observe saw, for Snapshot.
	lastStatus int
	lastKind   OutcomeKind
	lastAt     int64 // unix nanoseconds
	seen       bool
}

// errorRate is the error-rate EWMA decayed to now, halving per halfLife
// (<= 0: no decay).
func (st *accountStats) errorRate(now int64, halfLife time.Duration) float64 {
	e := math.Float64frombits(st.errRate.Load())
	if e == 0 {
		return 0
	}
	if dt := now - st.errAt.Load(); dt > 0 && halfLife > 0 {
		e *= math.Exp2(-float64(dt) / float64(halfLife))
	}
	return e
}

// observeError moves the error rate toward x (1 failure, 0 success).
// Callers hold mu.
func (st *accountStats) observeError(now int64, halfLife time.Duration, x float64) {
	e := st.errorRate(now, halfLife)*(1-ewmaAlpha) + ewmaAlpha*x
	if e < errFloor {
		e = 0
	}
	st.errRate.Store(math.Float64bits(e))
	st.errAt.Store(now)
}

// stats returns the health record of an account ID, creating it.
func (s *Scheduler) stats(id string) *accountStats {
	if v, ok := s.accts.Load(id); ok {
		return v.(*accountStats)
	}
	v, loaded := s.accts.LoadOrStore(id, &accountStats{hotStats: s.slab.get()})
	if !loaded {
		s.naccts.Add(1)
	}
	return v.(*accountStats)
}

// statsSlab hands out hotStats from arrays, so that those of a pool's
// accounts, created in pool order, sit next to each other in memory and
// Select's walk over them is sequential. An array is freed once none of its
// elements is referenced.
type statsSlab struct {
	mu   sync.Mutex
	free []hotStats
}

const slabSize = 256

func (b *statsSlab) get() *hotStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.free) == 0 {
		b.free = make([]hotStats, slabSize)
	}
	st := &b.free[0]
	b.free = b.free[1:]
	return st
}

// lookup returns the health record of an account ID without creating it.
func (s *Scheduler) lookup(id string) *accountStats {
	if v, ok := s.accts.Load(id); ok {
		return v.(*accountStats)
	}
	return nil
}

// Observe records the outcome of one upstream attempt on an account; the
// next Select reads the result. The relay calls it for every attempt.
//
//   - OutcomeSuccess lowers the error rate, updates the TTFT average, and
//     resets the 429 backoff and the failure count. The first success after
//     a cooldown has ended sends EventRecovered. A success does not end a
//     cooldown early: it may belong to a turn that started before the 429.
//   - 429: cooldown until the reset the headers announce (see below); with
//     none, Health.RateLimitBackoff (5 s) doubling per consecutive 429 up
//     to 5 min. A 429 whose body says insufficient_quota is a billing
//     problem: Health.PaymentCooldown (1 h), payment_required.
//   - 401: Health.AuthCooldown (10 min), unauthorized; Outcome.Err, when
//     set (why the relay could not renew the token), is added to the
//     reason. 402: Health.PaymentCooldown (1 h), payment_required.
//   - 403: Health.AuthCooldown (10 min), forbidden; but none at all when
//     the body is an HTML page, which comes from a proxy or CDN in front of
//     the upstream, not from the account.
//   - 529, a 503 whose body says "overloaded", OutcomeOverloaded:
//     Health.OverloadCooldown (30 s), overloaded.
//   - Other 5xx, 408, OutcomeConnError, OutcomeStreamError: the error rate
//     rises; the Health.UnhealthyAfter-th (3rd) in a row and every one
//     after cools the account for Health.UnhealthyCooldown (5 s), unhealthy.
//   - OutcomeClientError and other 4xx: nothing; the request was at fault.
//
// Reset headers of a 429: Retry-After-Ms, Retry-After (seconds or an HTTP
// date), "try again in 1.2s" in the body, x-codex-{primary,secondary}-
// reset-after-seconds when the matching used-percent is >= 100, and
// x-ratelimit-reset-{requests,tokens} (Go durations) when the matching
// remaining header is 0. The cooldown lasts until the latest of these,
// since the account is blocked until every exhausted window resets. An
// x-ratelimit-reset header without a remaining header counts only when
// nothing better is known, and then the earliest wins. Every cooldown is
// capped at Health.MaxCooldown (2 h).
//
// The averages use α = 0.2; the error rate also halves for every
// Health.ErrorHalfLife (1 min) without an outcome.
func (s *Scheduler) Observe(accountID string, o Outcome) {
	s.init()
	st := s.stats(accountID)
	now := s.now()
	nowNs := now.UnixNano()

	var (
		ev   AccountEvent
		send bool
	)
	st.mu.Lock()
	st.lastKind, st.lastStatus, st.lastAt, st.seen = o.Kind, o.Status, nowNs, true
	switch o.Kind {
	case OutcomeSuccess:
		if o.Status == 0 {
			st.lastStatus = http.StatusOK
		}
		st.observeError(nowNs, s.health.ErrorHalfLife, 0)
		if o.TTFT > 0 {
			if t := st.ttft.Load(); t > 0 {
				st.ttft.Store(int64(float64(t)*(1-ewmaAlpha) + ewmaAlpha*float64(o.TTFT)))
			} else {
				st.ttft.Store(int64(o.TTFT))
			}
		}
		st.failures, st.limited = 0, 0
		if st.penalized && st.coolUntil.Load() <= nowNs {
			st.penalized, st.coolKind, st.coolReason = false, "", ""
			ev, send = AccountEvent{AccountID: accountID, Kind: EventRecovered, Reason: "served a turn after the cooldown"}, true
		}
	case OutcomeOverloaded:
		ev, send = s.coolDown(st, now, s.health.OverloadCooldown, EventOverloaded, o.Status, "overloaded: the upstream refused the turn before any output")
	case OutcomeConnError, OutcomeStreamError:
		what := "connection error"
		if o.Kind == OutcomeStreamError {
			what = "stream broke"
		}
		if o.Err != nil {
			what += ": " + o.Err.Error()
		}
		ev, send = s.fail(st, now, 0, what)
	case OutcomeStatus:
		ev, send = s.observeStatus(st, now, o)
	}
	st.mu.Unlock()

	if send {
		ev.AccountID = accountID
		s.emit(ev)
	}
}

// observeStatus handles an HTTP error status. Callers hold st.mu.
func (s *Scheduler) observeStatus(st *accountStats, now time.Time, o Outcome) (AccountEvent, bool) {
	code := o.Status
	switch {
	case code == http.StatusTooManyRequests:
		if bytes.Contains(o.Body, []byte("insufficient_quota")) {
			return s.coolDown(st, now, s.health.PaymentCooldown, EventPaymentRequired, code, "429 insufficient_quota")
		}
		st.limited++
		d, src, ok := rateLimitReset(o.Header, o.Body, now)
		reason := fmt.Sprintf("429, reset in %s per %s", d, src)
		if !ok {
			d = backoff(s.health.RateLimitBackoff, st.limited)
			reason = fmt.Sprintf("429 without a reset header (%d in a row), backing off %s", st.limited, d)
		}
		return s.coolDown(st, now, d, EventRateLimited, code, reason)
	case code == http.StatusUnauthorized:
		reason := "401: the upstream rejected the credentials"
		if o.Err != nil {
			reason += "; " + o.Err.Error()
		}
		return s.coolDown(st, now, s.health.AuthCooldown, EventUnauthorized, code, reason)
	case code == http.StatusPaymentRequired:
		return s.coolDown(st, now, s.health.PaymentCooldown, EventPaymentRequired, code, "402: payment required")
	case code == http.StatusForbidden:
		if isHTML(o.Body) {
			return AccountEvent{}, false
		}
		return s.coolDown(st, now, s.health.AuthCooldown, EventForbidden, code, "403: access forbidden")
	case code == 529, code == http.StatusServiceUnavailable && bytes.Contains(bytes.ToLower(o.Body), []byte("overloaded")):
		return s.coolDown(st, now, s.health.OverloadCooldown, EventOverloaded, code, fmt.Sprintf("%d: upstream overloaded", code))
	case code == http.StatusRequestTimeout, code >= 500:
		return s.fail(st, now, code, fmt.Sprintf("status %d", code))
	}
	return AccountEvent{}, false
}

// fail records a server-side failure. Callers hold st.mu.
func (s *Scheduler) fail(st *accountStats, now time.Time, code int, what string) (AccountEvent, bool) {
	st.observeError(now.UnixNano(), s.health.ErrorHalfLife, 1)
	st.failures++
	if s.health.UnhealthyAfter < 0 || st.failures < s.health.UnhealthyAfter {
		return AccountEvent{}, false
	}
	return s.coolDown(st, now, s.health.UnhealthyCooldown, EventUnhealthy, code,
		fmt.Sprintf("%d failures in a row, last: %s", st.failures, what))
}

// coolDown benches the account for d (capped at MaxCooldown; negative:
// not at all) unless it is already benched for longer, and says whether
// that is news for OnAccountEvent. Callers hold st.mu.
func (s *Scheduler) coolDown(st *accountStats, now time.Time, d time.Duration, kind string, code int, reason string) (AccountEvent, bool) {
	if d < 0 {
		return AccountEvent{}, false
	}
	if s.health.MaxCooldown >= 0 {
		d = min(d, s.health.MaxCooldown)
	}
	nowNs := now.UnixNano()
	until := nowNs + int64(d)
	cur := st.coolUntil.Load()
	active := cur > nowNs
	switch {
	case until > cur:
		st.coolUntil.Store(until)
		if active && kind == st.coolKind && until-cur < int64(eventSlack) {
			return AccountEvent{}, false
		}
	case kind != st.coolKind && actionable(kind):
		// Already benched for longer, but the host has something new to fix.
		until = cur
	default:
		return AccountEvent{}, false
	}
	st.coolKind, st.coolReason, st.penalized = kind, reason, true
	return AccountEvent{Kind: kind, Until: time.Unix(0, until), Status: code, Reason: reason}, true
}

// actionable kinds ask the host to do something about the account.
func actionable(kind string) bool {
	return kind == EventUnauthorized || kind == EventForbidden || kind == EventPaymentRequired
}

// emit calls OnAccountEvent on its own goroutine and waits for it at most
// EventTimeout, so that a hook that blocks cannot hold the turn that saw
// the change. A panic in it is logged, not passed on, even one that comes
// after the wait ended.
func (s *Scheduler) emit(e AccountEvent) {
	if s.OnAccountEvent == nil {
		return
	}
	logPanic := func(err error) {
		if pe := (*hookcall.PanicError)(nil); errors.As(err, &pe) {
			s.log.Error("scheduler: OnAccountEvent panicked", "account", e.AccountID, "kind", e.Kind, "panic", pe.Value)
		}
	}
	err := hookcall.Bounded(context.Background(), s.eventTimeout, func(ctx context.Context) error {
		s.OnAccountEvent(ctx, e)
		return nil
	}, logPanic)
	if errors.Is(err, hookcall.ErrTimeout) {
		s.log.Error("scheduler: OnAccountEvent did not return in time; going on without it",
			"account", e.AccountID, "kind", e.Kind, "timeout", s.eventTimeout)
		return
	}
	logPanic(err)
}

// Recover forgets an account's cooldown, error rate, latency and backoff,
// e.g. once the host has refreshed its token after EventUnauthorized. It
// sends EventRecovered if the account had been penalized.
func (s *Scheduler) Recover(accountID string) {
	s.init()
	st := s.lookup(accountID)
	if st == nil {
		return
	}
	st.mu.Lock()
	st.coolUntil.Store(0)
	st.errRate.Store(0)
	st.ttft.Store(0)
	st.failures, st.limited, st.coolKind, st.coolReason = 0, 0, "", ""
	was := st.penalized
	st.penalized = false
	st.mu.Unlock()
	if was {
		s.emit(AccountEvent{AccountID: accountID, Kind: EventRecovered, Reason: "reset by the host"})
	}
}

// Apply takes an AccountEvent observed elsewhere (another relay instance,
// through a pub/sub channel) as if this Scheduler had seen it: a cooldown
// until e.Until, or for EventRecovered the end of the cooldown. It never
// calls OnAccountEvent, so instances that forward their events to each
// other do not echo them back. A cooldown shorter than the current one is
// ignored.
func (s *Scheduler) Apply(e AccountEvent) {
	s.init()
	st := s.stats(e.AccountID)
	st.mu.Lock()
	defer st.mu.Unlock()
	if e.Kind == EventRecovered {
		st.coolUntil.Store(0)
		st.failures, st.limited = 0, 0
		st.coolKind, st.coolReason = "", ""
		return
	}
	until := e.Until.UnixNano()
	if s.health.MaxCooldown >= 0 {
		if maxUntil := s.now().Add(s.health.MaxCooldown).UnixNano(); until > maxUntil {
			until = maxUntil
		}
	}
	if until > st.coolUntil.Load() {
		st.coolUntil.Store(until)
		st.coolKind, st.coolReason, st.penalized = e.Kind, e.Reason, true
	}
}
