package ledgertest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/billing"
)

// t0 is when the cases' turns start: 20 s into a UTC minute, mid-day,
// mid-month.
var t0 = time.Date(2026, 3, 10, 12, 0, 20, 0, time.UTC)

// runTag makes the ids of one Run unique, for ledgers whose store
// outlives a run.
func runTag() string {
	var b [6]byte
	rand.Read(b[:])
	return "lt" + hex.EncodeToString(b[:])
}

// tc is one case: its testing.T, its ledgers (a and b are the same one
// unless the case runs on two instances) and its ids' prefix.
type tc struct {
	*testing.T
	a, b  billing.Ledger
	tag   string
	probe atomic.Int64
}

func (c *tc) key(name string) string  { return c.tag + "-key-" + name }
func (c *tc) user(name string) string { return c.tag + "-user-" + name }
func (c *tc) id(name string) string   { return c.tag + "-req-" + name }

// turn is a Request of key (limits kl) and user (limits ul) holding
// micros and tokens, starting at at (zero: t0). Its id is a name, made
// unique by tc.id.
type turn struct {
	id     string
	key    string
	kl     billing.Limits
	user   string
	ul     billing.Limits
	micros int64
	tokens int64
	at     time.Time
}

func (c *tc) request(x turn) billing.Request {
	at := x.at
	if at.IsZero() {
		at = t0
	}
	id := "" // a turn without an id stays without one
	if x.id != "" {
		id = c.id(x.id)
	}
	return billing.Request{RequestID: id, APIKeyID: x.key, UserID: x.user, KeyLimits: x.kl, UserLimits: x.ul,
		HoldMicros: x.micros, HoldTokens: x.tokens, Now: at, Model: "gpt-5", Transport: "http"}
}

// hold holds x on l and fails the test on any error.
func (c *tc) hold(l billing.Ledger, x turn) billing.Remaining {
	c.Helper()
	r, err := l.Hold(c.Context(), c.request(x))
	if err != nil {
		c.Fatalf("Hold %s: %v", x.id, err)
	}
	return r
}

// refused holds x on l and returns the Denial it must be refused with.
func (c *tc) refused(l billing.Ledger, x turn) *billing.Denial {
	c.Helper()
	r, err := l.Hold(c.Context(), c.request(x))
	if err == nil {
		c.Fatalf("Hold %s admitted (remaining %+v), want a refusal", x.id, r)
	}
	d, ok := errors.AsType[*billing.Denial](err)
	if !ok {
		c.Fatalf("Hold %s: %v, want a *billing.Denial", x.id, err)
	}
	return d
}

// noQuota holds x on l, which must refuse it as an exhausted budget.
func (c *tc) noQuota(l billing.Ledger, x turn) {
	c.Helper()
	d := c.refused(l, x)
	if !isQuota(d) {
		c.Fatalf("Hold %s: denial %+v, want insufficient_quota", x.id, d)
	}
}

// isQuota says whether d answers as the zero Denial does: 429
// insufficient_quota.
func isQuota(d *billing.Denial) bool {
	return (d.Status == 0 || d.Status == 429) && (d.Type == "" || d.Type == "insufficient_quota") &&
		(d.Code == "" || d.Code == "insufficient_quota")
}

// rateLimited holds x on l, which must refuse it as over its RPM
// (kind "requests") or TPM ("tokens").
func (c *tc) rateLimited(l billing.Ledger, x turn, kind string) *billing.Denial {
	c.Helper()
	d := c.refused(l, x)
	if d.Status != 429 || d.Type != kind || d.Code != "rate_limit_exceeded" || d.RetryAfter <= 0 {
		c.Fatalf("Hold %s: denial %+v, want 429 %s rate_limit_exceeded with RetryAfter", x.id, d, kind)
	}
	return d
}

// fits says whether l admits x now: x is held and, if admitted, released
// at once under an id of its own.
func (c *tc) fits(l billing.Ledger, x turn) (billing.Remaining, bool) {
	c.Helper()
	x.id = fmt.Sprintf("probe-%d", c.probe.Add(1))
	q := c.request(x)
	r, err := l.Hold(c.Context(), q)
	if err == nil {
		c.release(l, x.id)
		return r, true
	}
	if d, ok := errors.AsType[*billing.Denial](err); !ok || !isQuota(d) {
		c.Fatalf("probe Hold: %v, want admitted or insufficient_quota", err)
	}
	return r, false
}

// budgetLeft checks that exactly left micro-USD fit x's scopes at x.at:
// a hold of left is admitted, one of left+1 is not.
func (c *tc) budgetLeft(l billing.Ledger, x turn, left int64) {
	c.Helper()
	x.micros = left + 1
	if _, ok := c.fits(l, x); ok {
		c.Fatalf("a hold of %d fits, want at most %d left", left+1, left)
	}
	x.micros = left
	if _, ok := c.fits(l, x); !ok {
		c.Fatalf("a hold of %d does not fit, want %d left", left, left)
	}
}

func (c *tc) settle(l billing.Ledger, u billing.Usage) {
	c.Helper()
	if u.CreatedAt.IsZero() {
		u.CreatedAt = t0
	}
	u.RequestID = c.id(u.RequestID)
	if err := l.Settle(c.Context(), u); err != nil {
		c.Fatalf("Settle %s: %v", u.RequestID, err)
	}
}

func (c *tc) release(l billing.Ledger, id string) {
	c.Helper()
	if err := l.Release(c.Context(), c.id(id)); err != nil {
		c.Fatalf("Release %s: %v", id, err)
	}
}

func (c *tc) wantRemaining(what string, got, want billing.Remaining) {
	c.Helper()
	if got != want {
		c.Fatalf("%s: remaining %+v, want %+v", what, got, want)
	}
}

// rem is a Remaining.
func rem(requests, tokens, micros int64) billing.Remaining {
	return billing.Remaining{Requests: requests, Tokens: tokens, BudgetMicros: micros}
}
