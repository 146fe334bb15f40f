package scheduler

import (
	"math"
	"slices"
	"sync"
	"sync/atomic"
)

// A poolView caches, per group, what Select needs about each account in a
// flat array, so that a Select over thousands of accounts walks contiguous
// memory and allocates nothing. It is rebuilt when the Pool returns
// different *Account pointers.
type poolView struct {
	src      []*Account // the slice the Pool returned
	accounts []*Account // a copy of it, for pools that copy on every call
	hot      []hotSlot  // what Select's loop reads, parallel to slots
	slots    []slot
	byID     map[string]int32

	models  sync.Map // model -> []int32, indexes of slots that serve it
	nmodels atomic.Int64
}

// hotSlot is kept to 24 bytes so that the part of a large pool Select reads
// on every call stays in cache.
type hotSlot struct {
	st      *hotStats
	weight  float32 // Account.Weight, in [1, 2^24]
	invConc float32 // 1 / Account.Concurrency, or 1/unlimitedSlots
	prio    int32   // Account.Priority, clamped to int32
	ws      bool
}

type slot struct {
	acct *Account
	st   *accountStats
	key  string // limiter key
	conc int    // Account.Concurrency
}

const (
	// Groups and models are client- or host-chosen strings; these caps keep
	// the caches bounded whatever they send.
	maxViews          = 1024
	maxModelsPerView  = 256
	accountSlotPrefix = "account:"
)

// view returns the cached view of a group's accounts, rebuilding it when the
// pool changed.
func (s *Scheduler) view(group string, accounts []*Account) *poolView {
	if v, ok := s.views.Load(group); ok {
		if pv := v.(*poolView); pv.matches(accounts) {
			return pv
		}
	}
	// Building under the read lock keeps pruneStats from dropping a record
	// that this view is about to reference.
	s.prune.RLock()
	pv := s.buildView(accounts)
	if _, loaded := s.views.Swap(group, pv); !loaded {
		if s.nviews.Add(1) > maxViews {
			s.views.Range(func(k, _ any) bool {
				if k == group {
					return true
				}
				if _, ok := s.views.LoadAndDelete(k); ok {
					s.nviews.Add(-1)
				}
				return true
			})
		}
	}
	s.prune.RUnlock()
	s.pruneStats()
	return pv
}

// matches compares pointers, not contents: a Pool must return new *Account
// values when an account changes (see Pool).
func (v *poolView) matches(accounts []*Account) bool {
	if len(accounts) != len(v.accounts) {
		return false
	}
	if len(accounts) == 0 || &accounts[0] == &v.src[0] {
		// The same slice again; a Pool does not modify a slice it returned.
		return true
	}
	for i, a := range accounts {
		if a != v.accounts[i] {
			return false
		}
	}
	return true
}

func (s *Scheduler) buildView(accounts []*Account) *poolView {
	v := &poolView{
		src:      accounts,
		accounts: slices.Clone(accounts),
		hot:      make([]hotSlot, 0, len(accounts)),
		slots:    make([]slot, 0, len(accounts)),
		byID:     make(map[string]int32, len(accounts)),
	}
	for _, a := range accounts {
		if a == nil {
			continue
		}
		st := s.stats(a.ID)
		v.byID[a.ID] = int32(len(v.slots))
		invConc := float32(1.0 / unlimitedSlots)
		if a.Concurrency > 0 {
			invConc = 1 / float32(a.Concurrency)
		}
		v.hot = append(v.hot, hotSlot{
			st:      st.hotStats,
			weight:  float32(min(max(a.Weight, 1), 1<<24)),
			invConc: invConc,
			prio:    clamp32(a.Priority),
			ws:      a.WebSocket,
		})
		v.slots = append(v.slots, slot{acct: a, st: st, key: accountSlotPrefix + a.ID, conc: a.Concurrency})
	}
	return v
}

func clamp32(n int) int32 { return int32(min(max(n, math.MinInt32), math.MaxInt32)) }

// serving lists the slots that serve model. Lists are cached per model up
// to maxModelsPerView; past that (clients sending made-up names) they are
// computed on each call.
func (v *poolView) serving(model string) []int32 {
	if x, ok := v.models.Load(model); ok {
		return x.([]int32)
	}
	var idx []int32
	for i := range v.slots {
		if v.slots[i].acct.Serves(model) {
			idx = append(idx, int32(i))
		}
	}
	if v.nmodels.Add(1) <= maxModelsPerView {
		v.models.Store(model, idx)
	}
	return idx
}

// pruneStats drops the health records of accounts that are in no cached
// view and carry no state, so that memory follows the pools as accounts
// come and go. A record with anything worth keeping (in flight, cooling,
// an error rate) stays.
func (s *Scheduler) pruneStats() {
	if !s.prune.TryLock() {
		return
	}
	defer s.prune.Unlock()
	total := 0
	s.views.Range(func(_, v any) bool {
		total += len(v.(*poolView).slots)
		return true
	})
	if s.naccts.Load() <= int64(2*total+1024) {
		return
	}
	now := s.now().UnixNano()
	s.accts.Range(func(k, x any) bool {
		id, st := k.(string), x.(*accountStats)
		if st.inflight.Load() != 0 || st.coolUntil.Load() > now || st.errorRate(now, s.health.ErrorHalfLife) > 0 {
			return true
		}
		inView := false
		s.views.Range(func(_, v any) bool {
			_, inView = v.(*poolView).byID[id]
			return !inView
		})
		if !inView {
			s.accts.Delete(id)
			s.naccts.Add(-1)
		}
		return true
	})
}
