package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"time"

	"github.com/relaykit/responsesrelay/concurrency"
)

// Scoring for the balanced layer. An account's score is
//
//	load + error rate + TTFT EWMA / 30 s
//
// where load is in-flight / Concurrency. Scores are compared in buckets of
// 0.05: accounts in the same bucket count as equals and Weight orders them,
// so that noise in latency or a turn more on a large account does not
// override the weights.
const (
	scoreBuckets = 20
	// An account without a limit weighs in-flight turns as if it had this
	// many slots.
	unlimitedSlots = 100
	ttftScale      = 30 * time.Second
	maxScore       = 1 << 20
)

// Select picks an account for the turn q and takes one of its slots.
//
// It tries, in order:
//
//  1. the account bound to q.PreviousResponseID (the only one that knows
//     that response), while its stickiness lasts,
//  2. the account bound to the session q.APIKeyID + q.SessionKey,
//  3. a balanced choice.
//
// A bound account is skipped, and the next layer decides, when it is gone
// from the group, excluded, no longer serves the model or transport, cooling
// down, failing (error rate above 0.5), slow (TTFT EWMA above 15 s) or full.
// Bindings come from Bind (or Claimed.BindOnRelease); Select itself
// never writes to the Store.
//
// Before any layer, even q.PreferAccount, a q.PreviousResponseID that Bind
// recorded as created under another API key than q.APIKeyID fails Select
// with an error wrapping ErrResponseNotOwned, without taking a slot.
//
// A q.RequireAccount replaces every layer: that account or none (a
// *NoAccountError of Reason ReasonRequired).
//
// The balanced layer considers the accounts that serve q.Model over
// q.WebSocket, are not cooling down and not in q.Exclude. It keeps the TopK
// best by (Priority, score) and tries their slots in that order, where
// accounts of equal priority and score are in weighted random order (an
// account's chance to come first is proportional to its Weight). When all
// of them are full it waits for the first one if q.Wait is set (bounded by
// AccountWait), and otherwise returns an error wrapping ErrAccountsBusy.
//
// When no account qualifies at all the error is a *NoAccountError whose
// Reason says why. The Selection's Release must be called once the turn is
// done with the account.
func (s *Scheduler) Select(ctx context.Context, q Request) (*Selection, error) {
	s.init()
	if s.Pool == nil {
		return nil, errors.New("scheduler: Scheduler.Pool is nil")
	}
	accounts, err := s.Pool.Accounts(ctx, q.Group)
	if err != nil {
		return nil, fmt.Errorf("scheduler: listing the accounts of group %q: %w", q.Group, err)
	}
	v := s.view(q.Group, accounts)
	if len(v.slots) == 0 {
		return nil, &NoAccountError{group: q.Group, model: q.Model, webSocket: q.WebSocket, Reason: ReasonNoAccounts}
	}
	now := s.now().UnixNano()
	var exBuf [8]int32
	ex := v.resolve(q.Exclude, exBuf[:0])

	// Ownership is checked first: a pinned account may hold the response too.
	prev := ""
	if q.PreviousResponseID != "" {
		if prev, err = s.previous(ctx, q, now); err != nil {
			return nil, err
		}
	}

	if q.RequireAccount != "" {
		return s.required(ctx, v, q, ex, now)
	}

	tried := ""
	if q.PreferAccount != "" {
		if sel, _ := s.sticky(ctx, v, q.PreferAccount, q, ex, now, LayerPinned); sel != nil {
			return sel, nil
		}
		tried = q.PreferAccount
	}
	if prev != "" && prev != tried {
		if sel, _ := s.sticky(ctx, v, prev, q, ex, now, LayerPreviousResponse); sel != nil {
			return sel, nil
		}
		tried = prev
	}
	if q.SessionKey != "" {
		if id := s.bound(ctx, sessionKey(q.APIKeyID, q.SessionKey)); id != "" && id != tried {
			if sel, _ := s.sticky(ctx, v, id, q, ex, now, LayerSession); sel != nil {
				return sel, nil
			}
		}
	}
	return s.balanced(ctx, v, q, ex, now)
}

// resolve maps excluded account IDs to slot indexes.
func (v *poolView) resolve(ids []string, buf []int32) []int32 {
	for _, id := range ids {
		if i, ok := v.byID[id]; ok {
			buf = append(buf, i)
		}
	}
	return buf
}

// bound reads a binding. A failing store only costs stickiness, so the
// error is logged and the turn goes on.
func (s *Scheduler) bound(ctx context.Context, key string) string {
	id, ok, err := s.get(ctx, key)
	if err != nil {
		s.log.Warn("scheduler: reading a sticky binding failed", "error", err)
		return ""
	}
	if !ok {
		return ""
	}
	return id
}

// required takes q.RequireAccount or says why it cannot.
func (s *Scheduler) required(ctx context.Context, v *poolView, q Request, ex []int32, now int64) (*Selection, error) {
	sel, why := s.sticky(ctx, v, q.RequireAccount, q, ex, now, LayerPinned)
	if sel != nil {
		return sel, nil
	}
	e := &NoAccountError{group: q.Group, model: q.Model, webSocket: q.WebSocket, Reason: ReasonRequired,
		detail: fmt.Sprintf("%q (%s)", q.RequireAccount, why)}
	if i, ok := v.byID[q.RequireAccount]; ok {
		if until := v.slots[i].st.coolUntil.Load(); until > now {
			e.Until = time.Unix(0, until)
		}
	}
	return nil, e
}

// stickyCheck returns the slot of the bound account id and why it cannot
// take the turn ("" when it can, slot permitting).
func (s *Scheduler) stickyCheck(v *poolView, id string, q Request, ex []int32, now int64) (*slot, string) {
	i, ok := v.byID[id]
	if !ok {
		return nil, "not in the group"
	}
	sl, h := &v.slots[i], &v.hot[i]
	switch {
	case slices.Contains(ex, i):
		return sl, "failed earlier in this turn"
	case !sl.acct.Serves(q.Model):
		return sl, "does not serve the model"
	case q.WebSocket && !h.ws:
		return sl, "does not support WebSocket"
	case sl.st.coolUntil.Load() > now:
		return sl, "cooling down"
	case sl.st.errorRate(now, s.health.ErrorHalfLife) > failingErrorRate:
		return sl, "failing"
	case s.health.SlowTTFT >= 0 && time.Duration(sl.st.ttft.Load()) > s.health.SlowTTFT:
		return sl, "slow"
	}
	return sl, ""
}

// sticky tries the bound account id, or returns nil and why it must be
// escaped.
func (s *Scheduler) sticky(ctx context.Context, v *poolView, id string, q Request, ex []int32, now int64, layer Layer) (*Selection, string) {
	sl, why := s.stickyCheck(v, id, q, ex, now)
	if why == "" {
		sel, err := s.take(ctx, sl, q.Model, layer)
		if sel != nil {
			return sel, ""
		}
		if err == nil && (layer == LayerPreviousResponse || id == q.RequireAccount) && q.Wait {
			// Only this account knows the previous response: another
			// would answer previous_response_not_found. A full one is
			// worth a bounded wait, unlike a sick one.
			release, werr := concurrency.Acquire(ctx, s.limiter, sl.key, sl.conc, s.wait)
			if werr == nil {
				return s.hold(sl, q.Model, layer, release), ""
			}
			why = "full after waiting: " + werr.Error()
		} else {
			why = "full"
			if err != nil {
				why = "limiter error"
				s.log.Warn("scheduler: taking a sticky account's slot failed", "account", id, "error", err)
			}
		}
	}
	s.skipped(ctx, layer, id, why)
	return nil, why
}

// skipped logs, at debug level, why a sticky account was escaped.
func (s *Scheduler) skipped(ctx context.Context, layer Layer, id, why string) {
	if s.log.Enabled(ctx, slog.LevelDebug) {
		s.log.DebugContext(ctx, "scheduler: skipping the sticky account", "layer", string(layer), "account", id, "reason", why)
	}
}

// cand is a candidate of the balanced layer, ordered by (prio, bucket, key).
type cand struct {
	idx    int32
	bucket int32
	prio   int32
	// key is an exponential variate divided by the weight: ordering equals
	// by it is a weighted random order (Efraimidis and Spirakis).
	key float64
}

func (c *cand) less(d *cand) bool {
	if c.prio != d.prio {
		return c.prio < d.prio
	}
	if c.bucket != d.bucket {
		return c.bucket < d.bucket
	}
	return c.key < d.key
}

// insertCand adds c to the sorted cs; cs must have room for it.
func insertCand(cs []cand, c cand) []cand {
	cs = append(cs, c)
	i := len(cs) - 1
	for i > 0 && c.less(&cs[i-1]) {
		cs[i] = cs[i-1]
		i--
	}
	cs[i] = c
	return cs
}

// exp returns an exponential variate with mean 1.
func (s *Scheduler) exp() float64 {
	if s.rand == nil {
		return rand.ExpFloat64()
	}
	return -math.Log(1 - s.uniform())
}

// tally is what the balanced layer saw, for a NoAccountError.
type tally struct {
	eligible, cooling int
	earliest          int64
}

// rank fills cands with the best candidates among the slots idx, in order.
//
// Giving every account its own random key costs a logarithm and a random
// number each, too slow for 10 000 accounts. Among accounts tied with the
// worst candidate, an account beats that candidate's key t with probability
// 1-exp(-w*t); those events are a Poisson process of rate t over the
// accounts' summed weights. jump is the weight left until its next point,
// so only the accounts that get in draw numbers.
func (s *Scheduler) rank(v *poolView, idx []int32, ws bool, ex []int32, now int64, cands []cand) ([]cand, tally) {
	var (
		n         tally
		k         = cap(cands)
		hot       = v.hot
		full      bool // len(cands) == k; then worst* describe the last one
		worstPrio int32
		worstBkt  int32
		worstKey  float64
		jump      = -1.0 // < 0: not drawn since the worst candidate changed
	)
	for p := 0; p < len(idx); p++ {
		if full {
			// Most accounts cannot get in: pass over them in a loop that
			// makes no calls. The tallies are not needed any more.
			if jump < 0 {
				jump = math.Inf(1)
				if worstKey > 0 {
					jump = s.exp() / worstKey
				}
			}
			if p, jump = skip(hot, idx, p, ws, ex, now, worstPrio, worstBkt, jump); p == len(idx) {
				break
			}
		}
		i := idx[p]
		h := &hot[i]
		if ws && !h.ws {
			continue
		}
		n.eligible++
		if full && h.prio > worstPrio {
			continue // the tallies only matter when nothing qualifies
		}
		if len(ex) > 0 && slices.Contains(ex, i) {
			continue
		}
		st := h.st
		if u := st.coolUntil.Load(); u > now {
			n.cooling++
			if n.earliest == 0 || u < n.earliest {
				n.earliest = u
			}
			continue
		}
		x := score(h)
		if st.errRate.Load() != 0 {
			x += v.slots[i].st.errorRate(now, s.health.ErrorHalfLife)
		}
		c := cand{idx: i, prio: h.prio, bucket: bucket(x)}

		switch {
		case !full:
			c.key = s.exp() / float64(h.weight)
			cands = insertCand(cands, c)
		case c.prio == worstPrio && c.bucket == worstBkt:
			if worstKey <= 0 {
				continue
			}
			w := float64(h.weight)
			if jump -= w; jump > 0 {
				continue
			}
			// This account got in: draw its key given that it is below
			// worstKey.
			c.key = -math.Log(1-s.uniform()*(1-math.Exp(-w*worstKey))) / w
			cands = insertCand(cands[:k-1], c)
		case c.prio < worstPrio || c.prio == worstPrio && c.bucket < worstBkt:
			c.key = s.exp() / float64(h.weight)
			cands = insertCand(cands[:k-1], c)
		default:
			continue
		}
		if full = len(cands) == k; full {
			w := &cands[k-1]
			worstPrio, worstBkt, worstKey = w.prio, w.bucket, w.key
		}
		jump = -1
	}
	return cands, n
}

// candAt is account i's priority and load bucket, as rank orders them
// (a kept slot's account is judged by it, linger.go). rank computes the
// same in its loop: as a call there (candAt is not inlined) it cost
// BenchmarkSelect/accounts=10000 3 %.
func (s *Scheduler) candAt(v *poolView, i int32, now int64) cand {
	h := &v.hot[i]
	x := score(h)
	if h.st.errRate.Load() != 0 {
		x += v.slots[i].st.errorRate(now, s.health.ErrorHalfLife)
	}
	return cand{idx: i, prio: h.prio, bucket: bucket(x)}
}

// score is an account's score without its error rate.
func score(h *hotSlot) float64 {
	var x float64
	if f := h.st.inflight.Load(); f != 0 {
		x = float64(f) * float64(h.invConc)
	}
	if t := h.st.ttft.Load(); t != 0 {
		x += float64(t) * (1 / float64(ttftScale))
	}
	return x
}

func bucket(x float64) int32 {
	if x > maxScore {
		x = maxScore
	}
	return int32(x * scoreBuckets)
}

// skip returns the position of the next account in idx, from p on, that
// may enter a full candidate list whose worst entry has priority wp and
// bucket wb, with jump weight left before the next tie gets in. Accounts
// with an error rate are returned too, for rank to score. skip makes no
// calls, which keeps its loop in registers.
func skip(hot []hotSlot, idx []int32, p int, ws bool, ex []int32, now int64, wp, wb int32, jump float64) (int, float64) {
	for ; p < len(idx); p++ {
		i := idx[p]
		h := &hot[i]
		if ws && !h.ws || h.prio > wp {
			continue
		}
		if len(ex) > 0 && contains(ex, i) {
			continue
		}
		st := h.st
		if st.coolUntil.Load() > now {
			continue
		}
		if st.errRate.Load() != 0 || h.prio < wp {
			return p, jump
		}
		b := bucket(score(h))
		if b < wb {
			return p, jump
		}
		if b > wb {
			continue
		}
		w := float64(h.weight)
		if jump <= w {
			return p, jump // gets in; rank subtracts w
		}
		jump -= w
	}
	return p, jump
}

func contains(s []int32, x int32) bool {
	for _, y := range s {
		if y == x {
			return true
		}
	}
	return false
}

func (s *Scheduler) balanced(ctx context.Context, v *poolView, q Request, ex []int32, now int64) (*Selection, error) {
	var buf [16]cand
	cands := buf[:0:min(s.topK, len(buf))]
	if s.topK > len(buf) {
		cands = make([]cand, 0, s.topK)
	}
	cands, n := s.rank(v, v.serving(q.Model), q.WebSocket, ex, now, cands)

	if len(cands) == 0 {
		e := &NoAccountError{group: q.Group, model: q.Model, webSocket: q.WebSocket, total: len(v.slots), eligible: n.eligible}
		switch {
		case n.eligible == 0:
			e.Reason = ReasonModel
		case n.cooling > 0:
			e.Reason, e.Until = ReasonCoolingDown, time.Unix(0, n.earliest)
		default:
			e.Reason = ReasonExcluded
		}
		return nil, e
	}

	var limErr error
	for i := range cands {
		sel, err := s.take(ctx, &v.slots[cands[i].idx], q.Model, LayerBalanced)
		if sel != nil {
			return sel, nil
		}
		if err != nil {
			limErr = err
		}
	}
	if !q.Wait {
		if limErr != nil {
			return nil, limErr
		}
		return nil, fmt.Errorf("%w (%d tried for model %q in group %q)", ErrAccountsBusy, len(cands), q.Model, q.Group)
	}
	best := &v.slots[cands[0].idx]
	release, err := concurrency.Acquire(ctx, s.limiter, best.key, best.conc, s.wait)
	if err != nil {
		return nil, fmt.Errorf("scheduler: waiting for a slot on account %s: %w", best.acct.ID, limiterErr(err))
	}
	return s.hold(best, q.Model, LayerBalanced, release), nil
}

// take tries to take a slot of the account without waiting; a nil Selection
// and nil error mean it is full.
func (s *Scheduler) take(ctx context.Context, sl *slot, model string, layer Layer) (*Selection, error) {
	release, ok, err := s.limiter.TryAcquire(ctx, sl.key, sl.conc)
	if err != nil {
		return nil, fmt.Errorf("scheduler: account limiter: %w", limiterErr(err))
	}
	if !ok {
		return nil, nil
	}
	return s.hold(sl, model, layer, release), nil
}

// held is a Selection with what its Release needs, in one allocation.
type held struct {
	Selection
	st      *hotStats
	release func()
	done    atomic.Bool
}

func (h *held) releaseOnce() {
	if !h.done.CompareAndSwap(false, true) {
		return
	}
	h.st.inflight.Add(-1)
	if h.release != nil {
		h.release()
	}
}

func (s *Scheduler) hold(sl *slot, model string, layer Layer, release func()) *Selection {
	sl.st.inflight.Add(1)
	h := &held{st: sl.st.hotStats, release: release}
	h.Selection = Selection{
		Account:       sl.acct,
		UpstreamModel: sl.acct.upstreamModel(model),
		Layer:         layer,
		Release:       h.releaseOnce,
	}
	return &h.Selection
}

// limiterErr marks a limiter failure that is not about the wait itself
// (queue full, timeout, the caller leaving) as ErrLimiter.
func limiterErr(err error) error {
	switch {
	case errors.Is(err, concurrency.ErrQueueFull), errors.Is(err, concurrency.ErrWaitTimeout),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	}
	return fmt.Errorf("%w: %w", ErrLimiter, err)
}
