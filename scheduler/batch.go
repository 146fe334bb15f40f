package scheduler

import (
	"context"
	"slices"
	"sync"
	"time"
)

// Slot is one slot of a Limiter: its key and its limit (<= 0: unlimited).
type Slot struct {
	Key   string
	Limit int
}

// Batcher is an optional interface of a Scheduler's Limiter whose slots
// live in the same shared backend as its Store (Redis): one TakeBatch
// reads a turn's sticky bindings and takes another slot of the Limiter
// (the relay's user slot) with an account's, and one Release frees both
// and writes the turn's bindings: two round trips for a turn instead of
// one per call. TrySelect uses it; Select and Bind do not. Which accounts
// may take the turn, and in which order, is still decided in Go: a Batcher
// only reads keys and takes slots in the order it is given.
type Batcher interface {
	TakeBatch(ctx context.Context, b *Batch) error
}

// Batch is one TakeBatch call. In one step the Batcher reads Reads, takes
// Extra, and only when Extra was free takes the first free slot of
// Accounts, in order. A slot is free as for TryAcquire (a queued waiter is
// never overtaken). When TakeBatch returns an error nothing is held.
type Batch struct {
	// Store is the Scheduler's Store; Reads are keys of it.
	Store Store
	Reads []string
	// Extra is taken first; when it is full nothing is taken. A Key of ""
	// or a Limit <= 0: none.
	Extra Slot
	// Accounts are the account slots to try, in order.
	Accounts []Slot

	// The fields below are set by TakeBatch.

	// Read reports that Values holds the values of Reads ("" for a missing
	// key; the Scheduler never writes an empty value) and that Release
	// writes its sets to Store. false: the Batcher cannot reach Store in
	// the same step, and the Scheduler reads and writes it itself.
	Read   bool
	Values []string
	// ExtraTaken reports that Extra is held (true when there is none).
	ExtraTaken bool
	// Taken is the index in Accounts of the slot taken, -1 for none.
	Taken int
	// Release frees the account slot (account) and Extra (extra) where
	// still held and, when Read, writes sets to Store, all in one step.
	// Each slot is freed once however often Release is called. It must
	// not depend on the turn's context: slots are freed after a client
	// left too. Non-nil whenever TakeBatch returned nil.
	Release func(account, extra bool, sets []StoreWrite)
}

// StoreWrite is a Store.Set that Batch.Release makes.
type StoreWrite struct {
	Key, Value string
	TTL        time.Duration
}

// seenMaxKeys bounds the bindings a batching Scheduler remembers to guess
// which accounts a turn's bindings name before reading them.
const seenMaxKeys = 1 << 15

// TrySelect is the fast path of Select for a Scheduler whose Limiter is a
// Batcher: one TakeBatch reads q's bindings, takes also (a slot of the
// same Limiter: the relay's user slot) and the account Select would take.
// The order of accounts is built before the bindings are read, from the
// bindings this Scheduler wrote or read last (in process, bounded), and
// checked against what was read.
//
// It returns nil, holding nothing, whenever one step does not decide the
// turn: the Limiter is no Batcher; also is full; no account was free;
// q.RequireAccount is set; q.PreviousResponseID belongs to another API
// key. The caller then goes the usual way (takes also itself, then
// Select), which waits, refuses or fails as documented there. When the
// bindings read differ from the guess, the accounts are tried again in
// the right order, one call each.
//
// The Claimed's Selection().Release frees the account slot alone (a failed
// attempt, before another Select); ReleaseAll frees what is left of both
// slots and writes what BindOnRelease recorded, in one more step.
func (s *Scheduler) TrySelect(ctx context.Context, q Request, also Slot) *Claimed {
	s.init()
	if s.batcher == nil || s.Pool == nil || q.RequireAccount != "" {
		return nil
	}
	accounts, err := s.Pool.Accounts(ctx, q.Group)
	if err != nil {
		return nil
	}
	v := s.view(q.Group, accounts)
	if len(v.slots) == 0 {
		return nil
	}
	now := s.now().UnixNano()
	var exBuf [8]int32
	ex := v.resolve(q.Exclude, exBuf[:0])

	var keyBuf [2]string
	reads := keyBuf[:0]
	prevAt, sessAt := -1, -1
	if q.PreviousResponseID != "" {
		prevAt, reads = len(reads), append(reads, responseKey(q.PreviousResponseID))
	}
	if q.SessionKey != "" {
		sessAt, reads = len(reads), append(reads, sessionKey(q.APIKeyID, q.SessionKey))
	}
	var guess [2]string
	for i, k := range reads {
		guess[i] = s.guess(ctx, k)
	}
	gPrev, gSess, err := stickyIDs(q, guess[:], prevAt, sessAt, now)
	if err != nil {
		return nil // Select refuses it
	}
	var planBuf [16]planned
	plan, stop := s.stickyPlan(ctx, v, q, ex, now, gPrev, gSess, planBuf[:0])
	sticky := len(plan)
	var balanced []planned
	if !stop {
		balanced = s.balancedPlan(v, q, ex, now)
		plan = appendPlans(plan, balanced)
	}
	if len(plan) == 0 {
		return nil
	}
	if s.SlotLinger > 0 && (also.Key == "" || also.Limit <= 0) {
		if c := s.fromLingering(ctx, v, q, ex, now, plan, sticky, reads, gPrev, gSess, prevAt, sessAt); c != nil {
			return c
		}
	}
	slots := make([]Slot, len(plan))
	for i, p := range plan {
		slots[i] = Slot{Key: p.sl.key, Limit: p.sl.conc}
	}
	if also.Limit <= 0 {
		also = Slot{}
	}
	b := &Batch{Store: s.store, Reads: reads, Extra: also, Accounts: slots, Taken: -1}
	if err := s.batcher.TakeBatch(ctx, b); err != nil {
		s.log.Debug("scheduler: taking slots in one step failed; taking them one by one", "error", err)
		return nil
	}
	if !b.ExtraTaken {
		return nil
	}
	var vals [2]string
	for i, k := range reads {
		vals[i] = s.readBack(ctx, b, i, k)
	}
	aPrev, aSess, err := stickyIDs(q, vals[:], prevAt, sessAt, now)
	if err != nil {
		b.Release(true, true, nil)
		return nil
	}
	var taken *planned
	if b.Taken >= 0 && b.Taken < len(plan) {
		taken = &plan[b.Taken]
	}
	var againBuf [16]planned
	again, stopAgain := plan[:sticky], stop
	if aPrev != gPrev || aSess != gSess {
		again, stopAgain = s.stickyPlan(ctx, v, q, ex, now, aPrev, aSess, againBuf[:0])
	}
	if stopAgain == stop && slices.Equal(again, plan[:sticky]) {
		// The bindings read lead where the guess led.
		if taken == nil {
			b.Release(true, true, nil)
			return nil
		}
		return s.holdBatch(b, taken.sl, q.Model, taken.layer, nil)
	}

	// Another instance wrote bindings this one did not know: try the
	// accounts in the order they ask for, keeping the slot taken when its
	// turn comes first.
	if !stopAgain {
		if balanced == nil {
			balanced = s.balancedPlan(v, q, ex, now)
		}
		again = appendPlans(again, balanced)
	}
	var takenSlot *slot
	if taken != nil {
		takenSlot = taken.sl
	}
	for _, p := range again {
		if p.sl == takenSlot {
			return s.holdBatch(b, p.sl, q.Model, p.layer, nil)
		}
		release, ok, err := s.limiter.TryAcquire(ctx, p.sl.key, p.sl.conc)
		if err != nil {
			break
		}
		if ok {
			b.Release(true, false, nil)
			return s.holdBatch(b, p.sl, q.Model, p.layer, release)
		}
	}
	b.Release(true, true, nil)
	return nil
}

// readBack returns the value of Reads[i] as the turn must see it: a
// binding this process has yet to write wins over the Store's.
func (s *Scheduler) readBack(ctx context.Context, b *Batch, i int, key string) string {
	if p, ok := s.pending.Load(key); ok {
		return p.(string)
	}
	var val string
	if b.Read {
		if i < len(b.Values) {
			val = b.Values[i]
		}
	} else if got, ok, err := s.store.Get(ctx, key); err != nil {
		// As in Select: a failing store costs stickiness only.
		s.log.Warn("scheduler: reading a sticky binding failed", "error", err)
	} else if ok {
		val = got
	}
	if val != "" {
		s.remember(ctx, key, val)
	} else {
		s.seen.Delete(ctx, key)
	}
	return val
}

// guess is the value of a binding as this process last knew it.
func (s *Scheduler) guess(ctx context.Context, key string) string {
	if p, ok := s.pending.Load(key); ok {
		return p.(string)
	}
	v, _, _ := s.seen.Get(ctx, key)
	return v
}

// get reads a binding for Select: one this process has yet to write
// (BindOnRelease) first.
func (s *Scheduler) get(ctx context.Context, key string) (string, bool, error) {
	if s.batcher != nil {
		if p, ok := s.pending.Load(key); ok {
			return p.(string), true, nil
		}
	}
	return s.store.Get(ctx, key)
}

// stickyIDs resolves the accounts the response and session bindings name,
// as Select's layers would.
func stickyIDs(q Request, vals []string, prevAt, sessAt int, now int64) (prev, sess string, err error) {
	if prevAt >= 0 && vals[prevAt] != "" {
		if prev, err = previousIn(q, vals[prevAt], now); err != nil {
			return "", "", err
		}
	}
	if sessAt >= 0 {
		sess = vals[sessAt]
	}
	return prev, sess, nil
}

// planned is an account TrySelect tries, and the layer that chose it.
type planned struct {
	sl    *slot
	layer Layer
}

// stickyPlan lists the bound accounts Select would try for q, in its
// order, given the accounts the bindings name (prev, sess). stop: a bound
// previous-response account ends the list (q.Wait: Select waits for it
// when full).
func (s *Scheduler) stickyPlan(ctx context.Context, v *poolView, q Request, ex []int32, now int64, prev, sess string, out []planned) ([]planned, bool) {
	tried := ""
	if q.PreferAccount != "" {
		if sl, why := s.stickyCheck(v, q.PreferAccount, q, ex, now); why == "" {
			out = appendPlan(out, planned{sl, LayerPinned})
		} else {
			s.skipped(ctx, LayerPinned, q.PreferAccount, why)
		}
		tried = q.PreferAccount
	}
	if prev != "" && prev != tried {
		sl, why := s.stickyCheck(v, prev, q, ex, now)
		if why == "" {
			out = appendPlan(out, planned{sl, LayerPreviousResponse})
			if q.Wait {
				return out, true
			}
		} else {
			s.skipped(ctx, LayerPreviousResponse, prev, why)
		}
		tried = prev
	}
	if sess != "" && sess != tried {
		if sl, why := s.stickyCheck(v, sess, q, ex, now); why == "" {
			out = appendPlan(out, planned{sl, LayerSession})
		} else {
			s.skipped(ctx, LayerSession, sess, why)
		}
	}
	return out, false
}

// balancedPlan lists the balanced layer's candidates, in order.
func (s *Scheduler) balancedPlan(v *poolView, q Request, ex []int32, now int64) []planned {
	var buf [16]cand
	cands := buf[:0:min(s.topK, len(buf))]
	if s.topK > len(buf) {
		cands = make([]cand, 0, s.topK)
	}
	cands, _ = s.rank(v, v.serving(q.Model), q.WebSocket, ex, now, cands)
	out := make([]planned, len(cands))
	for i, c := range cands {
		out[i] = planned{&v.slots[c.idx], LayerBalanced}
	}
	return out
}

func appendPlan(out []planned, p planned) []planned {
	for _, q := range out {
		if q.sl == p.sl {
			return out
		}
	}
	return append(out, p)
}

func appendPlans(out, ps []planned) []planned {
	for _, p := range ps {
		out = appendPlan(out, p)
	}
	return out
}

// Claimed is what TrySelect took: an account (Selection) and another slot
// of the Limiter, given back together by ReleaseAll.
type Claimed struct {
	// h is the account slot (the Batch's, or release's when the Batch
	// took another) and its Selection.
	h held
	s *Scheduler
	b *Batch
	// own: the account slot is the Batch's.
	own bool

	mu       sync.Mutex
	sets     []StoreWrite
	finished bool
}

// holdBatch makes the Selection of sl; release is nil when the Batch holds
// the account slot.
func (s *Scheduler) holdBatch(b *Batch, sl *slot, model string, layer Layer, release func()) *Claimed {
	sl.st.inflight.Add(1)
	c := &Claimed{s: s, b: b, own: release == nil}
	h := &c.h
	h.st, h.release = sl.st.hotStats, release
	if c.own {
		h.release = func() { b.Release(true, false, nil) }
	}
	h.Selection = Selection{
		Account:       sl.acct,
		UpstreamModel: sl.acct.upstreamModel(model),
		Layer:         layer,
		Release:       h.releaseOnce,
	}
	return c
}

// Selection is the account taken. Its Release gives the account slot back
// alone (before another Select, after a failed attempt).
func (c *Claimed) Selection() *Selection { return &c.h.Selection }

// ReleaseAll gives back the account slot if Release has not, and the other
// slot TrySelect took, and writes what BindOnRelease recorded: one step for
// a Batcher. It is idempotent and must be called once the turn is done
// with both.
func (c *Claimed) ReleaseAll() {
	h := c
	h.mu.Lock()
	if h.finished {
		h.mu.Unlock()
		return
	}
	h.finished = true
	sets := h.sets
	h.mu.Unlock()
	account := h.h.done.CompareAndSwap(false, true)
	kept := false
	if account {
		h.h.st.inflight.Add(-1)
		// Only a turn without a user slot keeps its account's: a host
		// whose turns all take one would gain nothing from it, and pay a
		// call per slot to give it back apart from the turn's bindings.
		if h.s.SlotLinger > 0 && h.b.Extra.Key == "" {
			// The Batch's own slot too: h.release frees it alone.
			kept = h.s.keep(h.h.Account, h.h.release)
		}
		if !kept && !h.own {
			h.h.release()
		}
	}
	h.b.Release(account && h.own && !kept, true, sets)
	for _, w := range sets {
		h.s.pending.CompareAndDelete(w.Key, w.Value)
	}
}

// BindOnRelease is Bind for the claimed account, with the Store written by
// ReleaseAll: this Scheduler's selections see the bindings at once, other
// processes once ReleaseAll has run (ARCHITECTURE.md, "Two round trips
// per turn"). When the Batcher cannot write the Store, or ReleaseAll has
// already run, it is Bind.
func (c *Claimed) BindOnRelease(ctx context.Context, q Request, responseID string) error {
	h, s := c, c.s
	id := c.h.Account.ID
	h.mu.Lock()
	if h.finished || !h.b.Read {
		h.mu.Unlock()
		return s.Bind(ctx, q, id, responseID) // which TrySelect's guesses follow
	}
	defer h.mu.Unlock()
	n := len(h.sets)
	if responseID != "" {
		h.sets = append(h.sets, s.responseBinding(q, id, responseID))
	}
	if q.SessionKey != "" {
		h.sets = append(h.sets, StoreWrite{Key: sessionKey(q.APIKeyID, q.SessionKey), Value: id, TTL: s.stickyTTL})
	}
	// Under mu, so that ReleaseAll cannot drop them before they are here.
	for _, w := range h.sets[n:] {
		s.pending.Store(w.Key, w.Value)
		s.remember(ctx, w.Key, w.Value)
	}
	return nil
}
