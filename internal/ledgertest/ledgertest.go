// Package ledgertest is the conformance suite of billing.Ledger: what
// every ledger does alike, whatever keeps its state, so that a relay
// admits, refuses and debits the same turns on any of them.
//
//	func TestConformance(t *testing.T) {
//		ledgertest.Run(t, func(t *testing.T) billing.Ledger { return newLedger(t) }, ledgertest.Options{})
//	}
//
// Every case names its own API keys, users and request ids, unique to the
// run, so the ledgers newLedger returns may share one store (even one
// that outlives the test), and gives every turn an explicit start
// (Request.Now, Usage.CreatedAt): the suite needs no clock of the
// ledger's, except for the expiry of holds (Options.Advance). The turns of
// a case start within minutes of one another, except where a case moves
// to another day, month or year, and then no hold of it is in flight.
//
// What the suite pins down, beyond the billing.Ledger contract:
//
//   - scopes: the key (APIKeyID, KeyLimits) and the user (UserID,
//     UserLimits); a hold must fit both;
//   - order: every scope's RPM, then TPM, then budget; a refused hold
//     counts nothing; an RPM or TPM refusal is 429 rate_limit_exceeded of
//     type "requests" or "tokens" with a Retry-After to the next minute;
//     a budget refusal is insufficient_quota;
//   - a Hold of an id held or settled already is admitted and counts
//     nothing more;
//   - Remaining is the key's (the user's limits are not reported), never
//     below 0 where limited, -1 where not;
//   - Settle debits Usage.CostMicros in full to every window of
//     Usage.CreatedAt (total, UTC day, UTC month) of the record's key and
//     user, hold or none, once per request id; with its hold, in the
//     hold's minute, it counts Usage.TotalTokens in place of HoldTokens;
//   - Release gives no request or token of the minute back;
//   - negative amounts count as zero;
//   - an empty request id is an error (not a Denial) from Hold and Settle.
package ledgertest

import (
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/billing"
)

// Options say what the ledger under test offers beyond the contract.
type Options struct {
	// Shared, when set, returns two Ledgers over one store, as two relay
	// instances hold them. The concurrent case then spreads its turns over
	// both, and the Shared case checks that a hold, a settlement and a
	// release made through one are seen through the other.
	Shared func(t *testing.T) (a, b billing.Ledger)
	// HoldTTL is how long the ledgers of newLedger keep a hold whose turn
	// never ends. With Advance, the Expiry case runs.
	HoldTTL time.Duration
	// Advance moves l's clock on by d, for the Expiry case: afterwards a
	// hold made before has expired for a turn that starts d later. A
	// ledger that judges expiry by the turns' start times (Request.Now)
	// does nothing here. nil: the Expiry case is skipped.
	Advance func(l billing.Ledger, d time.Duration)
}

// Run runs the suite as subtests of t, each on a ledger from newLedger.
func Run(t *testing.T, newLedger func(t *testing.T) billing.Ledger, opts Options) {
	tag := runTag()
	cases := []struct {
		name string
		run  func(c *tc)
	}{
		{"BudgetCountsHolds", testBudgetCountsHolds},
		{"OverrunDebitedInFull", testOverrunDebitedInFull},
		{"NegativeAmounts", testNegativeAmounts},
		{"UserScope", testUserScope},
		{"Remaining", testRemaining},
		{"SettleIdempotent", testSettleIdempotent},
		{"ReleaseThenSettle", testReleaseThenSettle},
		{"SettleWithoutHold", testSettleWithoutHold},
		{"DuplicateHold", testDuplicateHold},
		{"Periods", testPeriods},
		{"RequestsPerMinute", testRequestsPerMinute},
		{"TokensPerMinute", testTokensPerMinute},
		{"NoRequestID", testNoRequestID},
		{"Concurrent", testConcurrent},
	}
	for _, k := range cases {
		t.Run(k.name, func(t *testing.T) {
			l := newLedger(t)
			k.run(&tc{T: t, a: l, b: l, tag: tag + "-" + k.name})
		})
	}
	t.Run("ConcurrentShared", func(t *testing.T) {
		if opts.Shared == nil {
			t.Skip("no Options.Shared")
		}
		a, b := opts.Shared(t)
		testConcurrent(&tc{T: t, a: a, b: b, tag: tag + "-ConcurrentShared"})
	})
	t.Run("Shared", func(t *testing.T) {
		if opts.Shared == nil {
			t.Skip("no Options.Shared")
		}
		a, b := opts.Shared(t)
		testShared(&tc{T: t, a: a, b: b, tag: tag + "-Shared"})
	})
	t.Run("Expiry", func(t *testing.T) {
		if opts.HoldTTL <= 0 || opts.Advance == nil {
			t.Skip("no Options.HoldTTL and Advance")
		}
		l := newLedger(t)
		testExpiry(&tc{T: t, a: l, b: l, tag: tag + "-Expiry"}, opts.HoldTTL, func(d time.Duration) { opts.Advance(l, d) })
	})
}
