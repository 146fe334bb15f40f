package relay

import (
	"context"
	"reflect"

	"github.com/relaykit/responsesrelay/concurrency"
	"github.com/relaykit/responsesrelay/scheduler"
)

// A shared backend (Redis) costs a round trip per call: the user slot,
// each account slot tried, each sticky binding read, the binding written,
// and each slot given back. When the user slots are in the Scheduler's
// Limiter and it is a scheduler.Batcher, a turn whose user has a free slot
// takes it together with its account, reading the bindings, in one step
// (Scheduler.TrySelect), and gives both back, writing the turn's
// bindings, in one more at its end (Claimed.ReleaseAll). Anything else
// (the user full, every account busy, a binding another instance wrote
// that this one did not guess, a refusal) goes the usual way, with the
// usual waits and answers.

// batchesUserSlots reports whether user slots can be taken with account
// slots: userLimiter is the Scheduler's Limiter, and a Batcher.
func batchesUserSlots(s *scheduler.Scheduler, userLimiter concurrency.SlotLimiter) bool {
	if s == nil || s.Limiter == nil || !reflect.ValueOf(s.Limiter).Comparable() {
		return false
	}
	if _, ok := s.Limiter.(scheduler.Batcher); !ok {
		return false
	}
	return s.Limiter == userLimiter
}

// claimSlots takes the user slot (limit <= 0: none) and an account in one
// step. It returns the release of both, or nil when the turn must take
// them the usual way; the account waits in t.admit.batch for the first
// selection.
func (t *turn) claimSlots(limit int) func() {
	var also scheduler.Slot
	if limit > 0 {
		also = scheduler.Slot{Key: userKey(t.in.subj.UserID), Limit: limit}
	}
	var c *scheduler.Claimed
	began := t.h.now()
	err := t.wait(t.h.hookTimeout(), func(ctx context.Context) error {
		c = t.h.Scheduler.TrySelect(ctx, t.route.sched, also)
		return nil
	}, func(error) {
		if c != nil {
			c.ReleaseAll()
		}
	})
	if err != nil || c == nil {
		return nil // c is not read: an abandoned call may still be writing it
	}
	if limit > 0 {
		if t.observing() {
			t.observeSlot(SlotUser, began, WaitAcquired)
		}
		t.admit.body.release()
	}
	t.admit.batch = c
	return c.ReleaseAll
}

// takeClaimed returns the account claimSlots took, for the first
// selection, unless the turn has since been bound to another (a
// compaction item's maker): that slot goes back and the turn selects.
func (t *turn) takeClaimed() *scheduler.Selection {
	c := t.admit.batch
	if c == nil || t.admit.taken {
		return nil
	}
	t.admit.taken = true
	sel := c.Selection()
	if req := t.route.sched.RequireAccount; req != "" && req != sel.Account.ID {
		sel.Release()
		return nil
	}
	if t.observing() {
		t.flushAttempt(AttemptFailover)
		t.observeSlot(SlotAccount, t.h.now(), WaitAcquired)
	}
	return sel
}

// claimed returns the step's Claimed when sel is its account.
func (t *turn) claimed(sel *scheduler.Selection) *scheduler.Claimed {
	if c := t.admit.batch; c != nil && c.Selection() == sel {
		return c
	}
	return nil
}
