package scheduler

import (
	"context"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
)

// StaticPool is an in-memory Pool. Reads take no lock and return the
// group's slice without copying it; writes replace the slice, so a slice
// already returned never changes. The zero value is an empty pool, and it is
// safe for concurrent use.
type StaticPool struct {
	mu     sync.Mutex // serializes writers
	groups atomic.Pointer[map[string][]*Account]
}

// NewStaticPool returns an empty StaticPool.
func NewStaticPool() *StaticPool { return new(StaticPool) }

// Accounts implements Pool. The caller must not modify the returned slice.
func (p *StaticPool) Accounts(_ context.Context, group string) ([]*Account, error) {
	if m := p.groups.Load(); m != nil {
		return (*m)[group], nil
	}
	return nil, nil
}

// Add adds a to group, replacing the group's account with the same ID if
// there is one. Each call copies the group; use Set to load many accounts.
func (p *StaticPool) Add(group string, a *Account) {
	if a == nil {
		panic("scheduler: StaticPool.Add of a nil *Account")
	}
	p.update(func(m map[string][]*Account) {
		old := m[group]
		accts := make([]*Account, 0, len(old)+1)
		replaced := false
		for _, x := range old {
			if x.ID == a.ID {
				x, replaced = a, true
			}
			accts = append(accts, x)
		}
		if !replaced {
			accts = append(accts, a)
		}
		m[group] = accts
	})
}

// Set replaces the accounts of group with a copy of accounts; nil entries
// are dropped and an empty list removes the group. An account equal to the
// group's account of the same ID (every field, compared deeply) keeps the
// old pointer, and a list equal to the group's keeps the old slice, so a
// host can reload its whole configuration with Set and the Scheduler keeps
// its cached facts about every account that did not change.
func (p *StaticPool) Set(group string, accounts []*Account) {
	accts := slices.DeleteFunc(slices.Clone(accounts), func(a *Account) bool { return a == nil })
	p.update(func(m map[string][]*Account) {
		if len(accts) == 0 {
			delete(m, group)
			return
		}
		old := m[group]
		for i, a := range accts {
			j := slices.IndexFunc(old, func(x *Account) bool { return x.ID == a.ID })
			if j >= 0 && reflect.DeepEqual(*old[j], *a) {
				accts[i] = old[j]
			}
		}
		if slices.Equal(old, accts) {
			return
		}
		m[group] = accts
	})
}

// Remove removes the account with the given ID from group and reports
// whether it was there.
func (p *StaticPool) Remove(group, accountID string) bool {
	removed := false
	p.update(func(m map[string][]*Account) {
		old := m[group]
		i := slices.IndexFunc(old, func(a *Account) bool { return a.ID == accountID })
		if i < 0 {
			return
		}
		removed = true
		if len(old) == 1 {
			delete(m, group)
			return
		}
		m[group] = slices.Delete(slices.Clone(old), i, i+1)
	})
	return removed
}

// update applies f to a copy of the group map and publishes it.
func (p *StaticPool) update(f func(map[string][]*Account)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := make(map[string][]*Account)
	if old := p.groups.Load(); old != nil {
		for g, a := range *old {
			m[g] = a
		}
	}
	f(m)
	p.groups.Store(&m)
}
