package redisstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/examples/internal/ledgerkit"
)

// LedgerOptions configure a Ledger. A nil *LedgerOptions and zero fields
// take the defaults.
type LedgerOptions struct {
	// Prefix starts every key. "": DefaultPrefix ("relay:"); the ledger's
	// keys then start "relay:{ledger}:". Use the same prefix on every
	// relay instance that shares the budgets.
	Prefix string
	// HoldTTL is how long a hold counts when its turn never ends (its
	// process was killed): a hold created at the turn's start
	// (billing.Request.Now) has expired for turns that start HoldTTL later.
	// Turns that run longer than this lose their hold before they settle.
	// 0: 1 h.
	HoldTTL time.Duration
	// SettledTTL is how long a settled request id is remembered, so that a
	// record replayed within it is not debited twice. Cover the longest a
	// spool can hold a record. 0: 24 h.
	SettledTTL time.Duration
	// Now is the clock of a Request without Now, a Usage without
	// CreatedAt and a Balance at the zero time. nil: time.Now.
	Now func() time.Time
}

// Ledger is a billing.Ledger in Redis, so that every relay instance sharing
// the server spends one budget and one rate limit per API key and per
// user. Hold, Settle and Release are one Lua script each, so each is one
// round trip (two the first time a server meets the script: EVALSHA, then
// EVAL) and atomic: concurrent holds from any number of instances cannot
// together pass a budget, an RPM or a TPM.
//
// What a Hold checks, per scope (the key's, then the user's limits):
// requests and tokens in the UTC minute of Request.Now against RPM and TPM
// (a refusal is a 429 rate_limit_exceeded of type "requests" or "tokens"
// with Retry-After to the next minute), then the spend of the budget
// window of Request.Now plus every hold in flight plus this one against
// BudgetMicros (a refusal is the zero billing.Denial's 429
// insufficient_quota). A refused hold counts nothing. An admitted one
// counts its request and HoldTokens in the minute of both scopes and its
// HoldMicros in their holds; a second Hold of the same id counts nothing
// more. Holds expire after HoldTTL, judged by the turns' start times:
// the Hold script removes the expired holds of the scopes it touches (at
// most 256 per scope per call), so run the instances with clocks that
// agree to well within HoldTTL.
//
// Settle debits Usage.CostMicros to the spend of its key and user in every
// window of Usage.CreatedAt (the total, its UTC day and month), once per
// request id within SettledTTL, ends the turn's hold, and corrects the
// hold's minute from HoldTokens to Usage.TotalTokens. A Settle with no
// hold (a record replayed after a restart) still debits.
//
// All its keys share the hash tag {ledger}, so on Redis Cluster they live
// in one slot: the ledger runs on one node, whatever the cluster's size.
// Keys expire on their own: minute counters after 2 minutes, holds twice
// HoldTTL after the last hold of their scope, day windows 3 days and
// month windows 63 days after their last debit; the total spend of a scope
// stays. Run Redis with maxmemory-policy noeviction: an evicted counter is
// money or rate not counted.
//
// Create one with NewLedger; it starts nothing and holds no resources, and
// the client stays the caller's to close. Redis errors wrap
// ErrUnavailable; the relay refuses a turn whose Hold fails with 503.
type Ledger struct {
	c          redis.UniversalClient
	base       string
	holdTTL    time.Duration
	settledTTL time.Duration
	now        func() time.Time
}

var _ billing.Ledger = (*Ledger)(nil)

// Expiry of the keys of spend windows.
const (
	dayWindowTTL   = 3 * 24 * time.Hour
	monthWindowTTL = 63 * 24 * time.Hour
)

// NewLedger returns a Ledger over client (a *redis.Client, ClusterClient
// or Ring). Share the client with the package's other types.
func NewLedger(client redis.UniversalClient, o *LedgerOptions) *Ledger {
	var opt LedgerOptions
	if o != nil {
		opt = *o
	}
	if opt.Prefix == "" {
		opt.Prefix = DefaultPrefix
	}
	if opt.HoldTTL <= 0 {
		opt.HoldTTL = ledgerkit.HoldTTL
	}
	if opt.SettledTTL <= 0 {
		opt.SettledTTL = ledgerkit.SettledTTL
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	return &Ledger{c: client, base: opt.Prefix + "{ledger}:", holdTTL: opt.HoldTTL, settledTTL: opt.SettledTTL, now: opt.Now}
}

// scopeName is a scope's part of its keys: its kind and escaped id.
func scopeName(s ledgerkit.Scope) string { return s.Kind + ":" + keyEscaper.Replace(s.ID) }

// ms is d in whole milliseconds, rounded up, at least 1: Redis's PX.
func ms(d time.Duration) int64 { return max(1, int64((d+time.Millisecond-1)/time.Millisecond)) }

var errNoRequestID = errors.New("redisstore: ledger: a hold needs a request id")

// Hold implements billing.Ledger in one round trip.
func (l *Ledger) Hold(ctx context.Context, q billing.Request) (billing.Remaining, error) {
	if q.RequestID == "" {
		return billing.Remaining{}, errNoRequestID
	}
	now := q.Now
	if now.IsZero() {
		now = l.now()
	}
	scopes := ledgerkit.RequestScopes(q)
	nowMS := now.UnixMilli()
	tokens := ledgerkit.Amount(q.HoldTokens)
	argv := make([]any, 0, 9+5*len(scopes))
	argv = append(argv, l.base, q.RequestID, nowMS, ledgerkit.Minute(now), nowMS-l.holdTTL.Milliseconds(),
		ms(2*l.holdTTL), ledgerkit.Amount(q.HoldMicros), tokens, len(scopes))
	for _, s := range scopes {
		argv = append(argv, scopeName(s), billing.PeriodKey(s.Limits.Period, now),
			s.Limits.BudgetMicros, s.Limits.RPM, s.Limits.TPM)
	}
	keys := []string{l.base + "hold:" + q.RequestID, l.base + "settled:" + q.RequestID}
	v, err := ledgerHoldScript.Run(ctx, l.c, keys, argv...).Int64Slice()
	if err == nil && len(v) < 4 {
		err = fmt.Errorf("unexpected reply %v", v)
	}
	if err != nil {
		return billing.Remaining{}, fmt.Errorf("%w: ledger hold: %w", ErrUnavailable, err)
	}
	if v[0] == holdDenied {
		if v[2] < 1 || int(v[2]) > len(scopes) {
			return billing.Remaining{}, fmt.Errorf("%w: ledger hold: unexpected reply %v", ErrUnavailable, v)
		}
		s := scopes[v[2]-1]
		switch v[1] {
		case denyRequests:
			return billing.Remaining{}, ledgerkit.RequestsDenial(s, v[3], now)
		case denyTokens:
			return billing.Remaining{}, ledgerkit.TokensDenial(s, v[3], tokens, now)
		default:
			return billing.Remaining{}, ledgerkit.BudgetDenial(s)
		}
	}
	if len(v) < 5 || len(scopes) == 0 || scopes[0].Kind != ledgerkit.Key {
		return billing.Unlimited, nil
	}
	return ledgerkit.Remaining(scopes[0].Limits, v[1], v[2], v[3], v[4]), nil
}

// Settle implements billing.Ledger in one round trip.
func (l *Ledger) Settle(ctx context.Context, u billing.Usage) error {
	if u.RequestID == "" {
		return errors.New("redisstore: ledger: a usage record without a request id cannot be settled once")
	}
	var key, user string
	if u.APIKeyID != "" {
		key = scopeName(ledgerkit.Scope{Kind: ledgerkit.Key, ID: u.APIKeyID})
	}
	if u.UserID != "" {
		user = scopeName(ledgerkit.Scope{Kind: ledgerkit.User, ID: u.UserID})
	}
	created := u.CreatedAt
	if created.IsZero() {
		created = l.now()
	}
	w := ledgerkit.Windows(created)
	keys := []string{l.base + "settled:" + u.RequestID, l.base + "hold:" + u.RequestID}
	err := ledgerSettleScript.Run(ctx, l.c, keys, l.base, u.RequestID, ms(l.settledTTL),
		ledgerkit.Amount(u.CostMicros), ledgerkit.Amount(u.TotalTokens), key, user,
		w[1], w[2], ms(dayWindowTTL), ms(monthWindowTTL)).Err()
	if err != nil {
		return fmt.Errorf("%w: ledger settle: %w", ErrUnavailable, err)
	}
	return nil
}

// Release implements billing.Ledger in one round trip.
func (l *Ledger) Release(ctx context.Context, requestID string) error {
	err := ledgerReleaseScript.Run(ctx, l.c, []string{l.base + "hold:" + requestID}, l.base, requestID).Err()
	if err != nil {
		return fmt.Errorf("%w: ledger release: %w", ErrUnavailable, err)
	}
	return nil
}

// Balance is the budget of API key apiKeyID under limits l at now (zero:
// the Ledger's clock), for an admin page: what the window of now spent,
// what its turns in flight hold, and what is left. One round trip, which
// writes nothing.
func (l *Ledger) Balance(ctx context.Context, apiKeyID string, lim billing.Limits, now time.Time) (billing.Balance, error) {
	if now.IsZero() {
		now = l.now()
	}
	name := scopeName(ledgerkit.Scope{Kind: ledgerkit.Key, ID: apiKeyID})
	period := billing.PeriodKey(lim.Period, now)
	v, err := ledgerBalanceScript.Run(ctx, l.c, []string{l.base + "spend:" + name + ":" + period},
		l.base, name, now.UnixMilli()-l.holdTTL.Milliseconds()).Int64Slice()
	if err == nil && len(v) != 3 {
		err = fmt.Errorf("unexpected reply %v", v)
	}
	if err != nil {
		return billing.Balance{}, fmt.Errorf("%w: ledger balance: %w", ErrUnavailable, err)
	}
	return ledgerkit.Balance(lim, period, v[0], v[1], v[2]), nil
}
