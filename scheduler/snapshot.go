package scheduler

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// AccountState is one account as the scheduler sees it now, as returned by
// Snapshot and SnapshotGroup. Its JSON encoding is meant to be served as is
// by an operator page or a health endpoint.
type AccountState struct {
	ID     string   `json:"id"`
	Name   string   `json:"name,omitempty"`
	Groups []string `json:"groups,omitempty"` // the groups whose pool listed it (sorted)
	// InFlight is how many Selections of this Scheduler hold the account's
	// slots. With a limiter shared between processes, the others' turns
	// are not counted.
	InFlight int `json:"in_flight"`
	// Kept is how many of the account's slots this Scheduler keeps after
	// their turns (SlotLinger): held in the Limiter, serving no turn.
	Kept int `json:"kept"`
	// Limit is Account.Concurrency; 0 means unlimited.
	Limit int `json:"limit"`
	// CoolingUntil is the end of the current cooldown; zero when not cooling.
	CoolingUntil  time.Time     `json:"cooling_until,omitzero"`
	CoolingReason string        `json:"cooling_reason,omitempty"` // the AccountEvent kind (EventRateLimited, ...)
	CoolingDetail string        `json:"cooling_detail,omitempty"` // the human-readable cause (AccountEvent.Reason)
	ErrorRate     float64       `json:"error_rate"`               // the error-rate EWMA decayed to now, in [0,1]
	TTFT          time.Duration `json:"ttft_ns"`                  // the time-to-first-token EWMA; 0 unknown
	// ConsecutiveFailures counts server-side failures (5xx, 408,
	// connection and stream errors) since the last success.
	ConsecutiveFailures int `json:"consecutive_failures"`
	// LastStatus is the HTTP status of the last outcome Observe saw (200 for a success
	// reported without a status); 0 when none, or when it had no status (connection error).
	LastStatus  int       `json:"last_status"`
	LastOutcome string    `json:"last_outcome,omitempty"` // OutcomeKind.String() of the last outcome
	LastAt      time.Time `json:"last_at,omitzero"`       // when Observe saw the last outcome
}

// String names an outcome kind: "success", "status", "connection_error",
// "overloaded", "stream_error", "client_error".
func (k OutcomeKind) String() string {
	switch k {
	case OutcomeSuccess:
		return "success"
	case OutcomeStatus:
		return "status"
	case OutcomeConnError:
		return "connection_error"
	case OutcomeOverloaded:
		return "overloaded"
	case OutcomeStreamError:
		return "stream_error"
	case OutcomeClientError:
		return "client_error"
	}
	return fmt.Sprintf("OutcomeKind(%d)", int(k))
}

// Snapshot returns the state of every account this Scheduler knows, sorted
// by ID: those of the groups Select (or SnapshotGroup) has listed since it
// started, and any other account ID that Observe or Apply saw. It is meant
// for an operator page or a health endpoint. The Pool is not called, so an
// account shows up only once a Select has listed its group; use
// SnapshotGroup to see a group's accounts before their first turn.
//
// The scheduler forgets, and Snapshot stops listing, an account that is in
// no cached group and has nothing worth keeping (no turn in flight, no
// cooldown, no error rate), once such records pile up.
//
// Snapshot is safe to call concurrently with everything else. It allocates
// the result but holds no lock that Select waits on. Accounts are read one
// after another, not at a single instant; an account's cooldown and its
// reasons always belong together.
func (s *Scheduler) Snapshot() []AccountState {
	s.init()
	return s.snapshot("", nil)
}

// SnapshotGroup returns the state of the accounts of group, sorted by ID.
// It lists them through the Pool, as Select does, so accounts show up
// before their first turn. Groups names every group listed so far that
// includes the account, not only this one. A Pool error (or panic) is
// returned wrapped.
func (s *Scheduler) SnapshotGroup(ctx context.Context, group string) ([]AccountState, error) {
	s.init()
	if s.Pool == nil {
		return nil, errors.New("scheduler: Scheduler.Pool is nil")
	}
	accounts, err := s.listAccounts(ctx, group)
	if err != nil {
		return nil, fmt.Errorf("scheduler: listing the accounts of group %q: %w", group, err)
	}
	return s.snapshot(group, s.view(group, accounts)), nil
}

// listAccounts calls the Pool. A panic in it becomes an error: a status page
// must not take the process down with it.
func (s *Scheduler) listAccounts(ctx context.Context, group string) (accounts []*Account, err error) {
	defer func() {
		if r := recover(); r != nil {
			accounts, err = nil, fmt.Errorf("Pool.Accounts panicked: %v", r)
		}
	}()
	return s.Pool.Accounts(ctx, group)
}

// snapEntry gathers one account while a snapshot is taken.
type snapEntry struct {
	id    string
	st    *accountStats
	acct  *Account // from the first group by name listing it, or the requested one
	off   int32    // where its groups start in the shared backing array
	n     int32    // how many groups list it
	lastG int32    // 1 + index of the last group counted, to skip duplicates
}

type namedView struct {
	group string
	v     *poolView
}

// snapshot collects the accounts of the view only (of group), or with only
// nil those of every cached view and health record.
func (s *Scheduler) snapshot(group string, only *poolView) []AccountState {
	var views []namedView
	s.views.Range(func(k, v any) bool {
		if g := k.(string); only == nil || g != group {
			views = append(views, namedView{g, v.(*poolView)})
		}
		return true
	})
	if only != nil {
		// The view just built, even if a concurrent rebuild replaced it.
		views = append(views, namedView{group, only})
	}
	slices.SortFunc(views, func(a, b namedView) int { return cmp.Compare(a.group, b.group) })

	var (
		entries []snapEntry
		index   map[string]int32
	)
	if only != nil {
		entries = make([]snapEntry, 0, len(only.slots))
		index = make(map[string]int32, len(only.slots))
		for i := range only.slots {
			sl := &only.slots[i]
			if _, ok := index[sl.acct.ID]; !ok {
				index[sl.acct.ID] = int32(len(entries))
				entries = append(entries, snapEntry{id: sl.acct.ID, st: sl.st, acct: sl.acct})
			}
		}
	} else {
		n := int(s.naccts.Load())
		entries = make([]snapEntry, 0, n)
		index = make(map[string]int32, n)
	}

	// Memberships in group order; their groups then go into one backing
	// array, each account's a non-overlapping part of it. Accounts are
	// added in pool order, which is often ID order already and makes the
	// final sort cheap.
	type member struct{ e, g int32 }
	var members []member
	for g, nv := range views {
		for i := range nv.v.slots {
			sl := &nv.v.slots[i]
			e, ok := index[sl.acct.ID]
			if !ok {
				if only != nil {
					continue
				}
				e = int32(len(entries))
				index[sl.acct.ID] = e
				entries = append(entries, snapEntry{id: sl.acct.ID, st: sl.st, acct: sl.acct})
			}
			en := &entries[e]
			if en.lastG == int32(g)+1 {
				continue // listed twice by one group
			}
			en.lastG = int32(g) + 1
			en.n++
			members = append(members, member{e, int32(g)})
		}
	}
	// The accounts no cached view lists: seen only by Observe or Apply, or
	// gone from their pools. Every view's account has a record, so with no
	// more records than accounts there are none.
	if only == nil && int(s.naccts.Load()) > len(entries) {
		s.accts.Range(func(k, v any) bool {
			id := k.(string)
			if _, ok := index[id]; !ok {
				index[id] = int32(len(entries))
				entries = append(entries, snapEntry{id: id, st: v.(*accountStats)})
			}
			return true
		})
	}
	groups := make([]string, len(members))
	var off int32
	for i := range entries {
		entries[i].off, off = off, off+entries[i].n
		entries[i].n = 0
	}
	for _, m := range members {
		en := &entries[m.e]
		groups[en.off+en.n] = views[m.g].group
		en.n++
	}

	slices.SortFunc(entries, func(a, b snapEntry) int { return strings.Compare(a.id, b.id) })
	now := s.now().UnixNano()
	out := make([]AccountState, len(entries))
	for i := range entries {
		en := &entries[i]
		as := &out[i]
		as.ID = en.id
		if en.n > 0 {
			as.Groups = groups[en.off : en.off+en.n : en.off+en.n]
		}
		if a := en.acct; a != nil {
			as.Name = a.Name
			as.Limit = max(a.Concurrency, 0)
		}
		en.st.fill(as, now, s.health.ErrorHalfLife)
		as.Kept = s.lingering.kept(en.id)
	}
	return out
}

// fill copies the record's health into as. The fields under mu are read
// together, so a cooldown and its reason match.
func (st *accountStats) fill(as *AccountState, now int64, halfLife time.Duration) {
	st.mu.Lock()
	until, kind, reason := st.coolUntil.Load(), st.coolKind, st.coolReason
	as.ConsecutiveFailures = st.failures
	seen, lastKind, lastStatus, lastAt := st.seen, st.lastKind, st.lastStatus, st.lastAt
	st.mu.Unlock()

	as.InFlight = int(max(st.inflight.Load(), 0))
	if until > now {
		as.CoolingUntil = time.Unix(0, until)
		as.CoolingReason, as.CoolingDetail = kind, reason
	}
	if e := st.errorRate(now, halfLife); e > 0 {
		as.ErrorRate = min(e, 1)
	}
	as.TTFT = time.Duration(st.ttft.Load())
	if seen {
		as.LastStatus, as.LastOutcome, as.LastAt = lastStatus, lastKind.String(), time.Unix(0, lastAt)
	}
}
