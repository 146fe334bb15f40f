package scheduler

import (
	"context"
	"math"
	"sync"
	"time"
)

// Slots that linger (Scheduler.SlotLinger). With a shared Limiter every
// account slot costs a round trip to take, and its release rides on the
// turn's binding write. A lingering slot is one this process keeps after
// a turn that took no user slot, for SlotLinger. A turn here that needs no
// binding read and no user slot takes it without asking the Limiter
// (TrySelect), when its account is as good a choice as the one the
// balanced order would try first; a continuation bound to its account
// takes it after one step that reads the bindings and takes no slot.
// Back-to-back turns then cost one round trip each (the binding write)
// instead of two, and at load most account slots change hands in this
// process. The price: the slot counts as busy for the other instances
// until it is taken here or given back, and a waiter queued in the
// Limiter meanwhile can be overtaken by a turn here, for at most
// SlotLinger. So fewer than half of an account's slots are kept
// (keepMax), and none of an account with one or two.

// fromLingering serves q, which takes no user slot, from a slot SlotLinger
// kept, or returns nil. Without a bound account (sticky == 0) that is any
// kept slot as good as the balanced order's first, without a step. A bound
// account comes first in plan: its kept slot serves when the bindings read
// (reads, in one step that takes no slot) lead where the guess led.
func (s *Scheduler) fromLingering(ctx context.Context, v *poolView, q Request, ex []int32, now int64,
	plan []planned, sticky int, reads []string, gPrev, gSess string, prevAt, sessAt int) *Claimed {
	if sticky == 0 {
		if len(reads) > 0 {
			return nil // a binding this process does not know: read it first
		}
		return s.takeLingering(v, q, ex, now, plan[0].sl)
	}
	first := plan[0]
	id := first.sl.acct.ID
	release := s.lingering.takeID(id)
	if release == nil {
		return nil
	}
	if len(reads) == 0 { // pinned (PreferAccount): nothing to read
		return s.holdBatch(noBatch(), first.sl, q.Model, first.layer, release)
	}
	b := &Batch{Store: s.store, Reads: reads, Taken: -1}
	if err := s.batcher.TakeBatch(ctx, b); err != nil {
		s.keepAgain(first.sl, release)
		return nil
	}
	var vals [2]string
	for i, k := range reads {
		vals[i] = s.readBack(ctx, b, i, k)
	}
	aPrev, aSess, err := stickyIDs(q, vals[:], prevAt, sessAt, now)
	if err != nil || aPrev != gPrev || aSess != gSess || !b.ExtraTaken {
		// Another instance moved a binding: the usual way decides.
		s.keepAgain(first.sl, release)
		b.Release(true, true, nil)
		return nil
	}
	return s.holdBatch(b, first.sl, q.Model, first.layer, release)
}

// keep keeps a slot of a for SlotLinger; false, keeping nothing, when
// keepMax of its slots are kept already.
func (s *Scheduler) keep(a *Account, release func()) bool {
	return s.lingering.park(a.ID, keepMax(a.Concurrency), s.SlotLinger, release)
}

// keepAgain keeps a slot taken from the kept ones and not used, or gives
// it back when as many are kept again meanwhile.
func (s *Scheduler) keepAgain(sl *slot, release func()) {
	if !s.keep(sl.acct, release) {
		release()
	}
}

// noBatch is the Batch of a claim on a kept slot: it takes and writes
// nothing, so BindOnRelease binds at once (Bind).
func noBatch() *Batch {
	return &Batch{Taken: -1, ExtraTaken: true, Release: func(bool, bool, []StoreWrite) {}}
}

// takeLingering claims a slot SlotLinger kept, of an account TrySelect may
// take for q and as good a choice as first, the balanced order's first
// (same priority, a load no higher); nil when none lingers.
func (s *Scheduler) takeLingering(v *poolView, q Request, ex []int32, now int64, first *slot) *Claimed {
	var best *cand // scored at the first kept slot looked at
	var sl *slot
	release := s.lingering.take(func(id string) bool {
		got, why := s.stickyCheck(v, id, q, ex, now)
		if why != "" || got == nil {
			return false
		}
		if best == nil {
			c := s.candAt(v, v.byID[first.acct.ID], now)
			best = &c
		}
		if c := s.candAt(v, v.byID[id], now); c.prio != best.prio || c.bucket > best.bucket {
			return false
		}
		sl = got
		return true
	})
	if release == nil {
		return nil
	}
	return s.holdBatch(noBatch(), sl, q.Model, LayerBalanced, release)
}

// lingering is one account slot kept after its turn.
type lingering struct {
	id      string // Account.ID
	release func()
	timer   *time.Timer
}

// lingerSet holds the lingering slots, by account ID.
type lingerSet struct {
	mu    sync.Mutex
	byID  map[string][]*lingering
	count int
}

// keepMax is how many slots of an account with limit conc a process
// keeps: fewer than half, so that an account with few slots keeps none
// (its only slot kept would make another instance's next turn wait for
// it) and a kept slot never makes an account look full on its own.
// Unlimited (conc <= 0): no bound.
func keepMax(conc int) int {
	if conc <= 0 {
		return math.MaxInt
	}
	return (conc - 1) / 2
}

// park keeps an account slot for d, then gives it back; false, keeping
// nothing, when limit slots of the account are kept already.
func (ls *lingerSet) park(id string, limit int, d time.Duration, release func()) bool {
	l := &lingering{id: id, release: release}
	ls.mu.Lock()
	if len(ls.byID[id]) >= limit {
		ls.mu.Unlock()
		return false
	}
	if ls.byID == nil {
		ls.byID = make(map[string][]*lingering)
	}
	ls.byID[id] = append(ls.byID[id], l)
	ls.count++
	// Under mu, so that take and flush find the timer set.
	l.timer = time.AfterFunc(d, func() {
		if ls.remove(l) {
			l.release()
		}
	})
	ls.mu.Unlock()
	return true
}

// remove takes l out of the set; false when another took it first.
func (ls *lingerSet) remove(l *lingering) bool {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	list := ls.byID[l.id]
	for i, m := range list {
		if m == l {
			ls.drop(l.id, list, i)
			return true
		}
	}
	return false
}

// drop removes list[i], the slots of id, under mu.
func (ls *lingerSet) drop(id string, list []*lingering, i int) {
	last := len(list) - 1
	list[i] = list[last]
	list[last] = nil
	if last == 0 {
		delete(ls.byID, id)
	} else {
		ls.byID[id] = list[:last]
	}
	ls.count--
}

// lingerScan bounds the accounts take looks at, under the set's lock,
// for one turn: a pool of thousands of accounts may have a slot kept for
// each. The map's order is random, so each turn looks at other ones.
const lingerScan = 32

// take returns the release of a lingering slot of the first account that
// ok accepts, now the caller's, or nil.
func (ls *lingerSet) take(ok func(id string) bool) func() {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	looked := 0
	for id, list := range ls.byID {
		if looked++; looked > lingerScan {
			break
		}
		if ok(id) {
			return ls.popLocked(id, list)
		}
	}
	return nil
}

// takeID returns the release of a lingering slot of account id, now the
// caller's, or nil.
func (ls *lingerSet) takeID(id string) func() {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if list := ls.byID[id]; len(list) > 0 {
		return ls.popLocked(id, list)
	}
	return nil
}

// popLocked takes the last of list, the slots of id, under mu.
func (ls *lingerSet) popLocked(id string, list []*lingering) func() {
	l := list[len(list)-1]
	ls.drop(id, list, len(list)-1)
	// A timer that already fired waits for mu in remove, finds l gone and
	// gives nothing back: the slot is the caller's either way.
	l.timer.Stop()
	return l.release
}

// flush gives every lingering slot back now.
func (ls *lingerSet) flush() {
	ls.mu.Lock()
	var all []*lingering
	for _, list := range ls.byID {
		all = append(all, list...)
	}
	clear(ls.byID)
	ls.count = 0
	ls.mu.Unlock()
	for _, l := range all {
		l.timer.Stop()
		l.release()
	}
}

// kept is how many slots of account id linger.
func (ls *lingerSet) kept(id string) int {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return len(ls.byID[id])
}

// len is how many slots linger.
func (ls *lingerSet) len() int {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return ls.count
}

// ReleaseLingering gives back at once the account slots SlotLinger keeps.
// relay.Handler.Shutdown calls it once its turns have ended, so that the
// slots of a stopping instance do not stay taken in a shared Limiter until
// their leases expire. Turns after it may leave slots lingering again.
func (s *Scheduler) ReleaseLingering() {
	s.lingering.flush()
}
