// Package ledgerkit holds what the examples' billing.Ledger stores share,
// so that a Redis and a SQL ledger admit, refuse and answer exactly as
// billing.MemoryLedger does:
// the scopes of a turn, the windows its spend counts in, its rate-limit
// minute, and the denials and remaining amounts they report.
package ledgerkit

import (
	"fmt"
	"time"

	"github.com/relaykit/responsesrelay/billing"
)

// Scope kinds.
const (
	Key  = "key"
	User = "user"
)

// A Scope is one party a hold must fit: the API key or the user.
type Scope struct {
	Kind   string // Key or User
	ID     string
	Limits billing.Limits
}

// Scopes returns the scopes of a turn, the key's first. A scope with an
// empty id and no limits is left out: it has nobody to meter and nothing
// to enforce, and keeping it would make every id-less turn contend on one
// shared counter. One with limits but no id is kept, so that limits are
// never dropped silently.
func Scopes(keyID string, key billing.Limits, userID string, user billing.Limits) []Scope {
	s := make([]Scope, 0, 2)
	if keyID != "" || key != (billing.Limits{}) {
		s = append(s, Scope{Key, keyID, key})
	}
	if userID != "" || user != (billing.Limits{}) {
		s = append(s, Scope{User, userID, user})
	}
	return s
}

// RequestScopes is Scopes of q.
func RequestScopes(q billing.Request) []Scope {
	return Scopes(q.APIKeyID, q.KeyLimits, q.UserID, q.UserLimits)
}

// Windows are the budget windows a turn that started at t is debited in:
// the total, its UTC day and its UTC month (billing.PeriodKey's names).
func Windows(t time.Time) [3]string {
	return [3]string{
		billing.PeriodKey(billing.PeriodTotal, t),
		billing.PeriodKey(billing.PeriodDay, t),
		billing.PeriodKey(billing.PeriodMonth, t),
	}
}

// Minute is the rate-limit window of t: the UTC minute, as minutes since
// the Unix epoch (floored).
func Minute(t time.Time) int64 {
	s := t.Unix()
	m := s / 60
	if s%60 < 0 {
		m--
	}
	return m
}

// RetryAfter is the time from now to the next minute, when the rate
// limits start again.
func RetryAfter(now time.Time) time.Duration {
	return time.Unix((Minute(now)+1)*60, 0).Sub(now)
}

// MaxAmount is the largest estimate or cost a ledger takes (2^53, $9
// billion in micro-USD): Lua computes in doubles, exact up to it, and
// sums of such amounts stay far from int64 overflow, which a store would
// answer with an error on every retry.
const MaxAmount = 1 << 53

// Amount clamps an estimate or a cost to [0, MaxAmount]: a negative
// amount would credit a scope.
func Amount(n int64) int64 { return min(max(n, 0), MaxAmount) }

func (s Scope) noun() string {
	if s.Kind == Key {
		return "API key"
	}
	return "user"
}

// RequestsDenial is the refusal of a turn over s's RPM: 429 of type
// "requests", code rate_limit_exceeded, as OpenAI answers one, with
// Retry-After to the next minute.
func RequestsDenial(s Scope, used int64, now time.Time) *billing.Denial {
	wait := RetryAfter(now)
	return &billing.Denial{Status: 429, Type: "requests", Code: "rate_limit_exceeded", RetryAfter: wait,
		Message: fmt.Sprintf("Rate limit reached for requests per minute (RPM) of this %s: limit %d, used %d, requested 1. Please try again in %s.",
			s.noun(), s.Limits.RPM, used, seconds(wait))}
}

// TokensDenial is the refusal of a turn over s's TPM: 429 of type
// "tokens".
func TokensDenial(s Scope, used, requested int64, now time.Time) *billing.Denial {
	wait := RetryAfter(now)
	return &billing.Denial{Status: 429, Type: "tokens", Code: "rate_limit_exceeded", RetryAfter: wait,
		Message: fmt.Sprintf("Rate limit reached for tokens per minute (TPM) of this %s: limit %d, used %d, requested %d. Please try again in %s.",
			s.noun(), s.Limits.TPM, used, requested, seconds(wait))}
}

// BudgetDenial is the refusal of a turn over s's budget: the zero Denial's
// 429 insufficient_quota, which the SDKs do not retry.
func BudgetDenial(s Scope) *billing.Denial {
	var when string
	switch s.Limits.Period {
	case billing.PeriodDay:
		when = " for today (UTC)"
	case billing.PeriodMonth:
		when = " for this month (UTC)"
	}
	return &billing.Denial{Message: "The budget of this " + s.noun() + when + " is spent."}
}

func seconds(d time.Duration) string {
	return fmt.Sprintf("%ds", int64((d+time.Second-1)/time.Second))
}

// Remaining is a key's answer after a hold, from its limits and what its
// minute and budget window hold (the hold included): -1 where unlimited,
// never below 0 otherwise (a negative field would read as unlimited).
func Remaining(l billing.Limits, requests, tokens, spent, held int64) billing.Remaining {
	r := billing.Unlimited
	if l.RPM > 0 {
		r.Requests = max(l.RPM-requests, 0)
	}
	if l.TPM > 0 {
		r.Tokens = max(l.TPM-tokens, 0)
	}
	if l.BudgetMicros > 0 {
		r.BudgetMicros = max(l.BudgetMicros-spent-held, 0)
	}
	return r
}

// Balance is a key's balance from what its window spent and its turns in
// flight hold.
func Balance(l billing.Limits, period string, spent, held, holds int64) billing.Balance {
	b := billing.Balance{SpentMicros: spent, HeldMicros: held, Holds: holds, RemainingMicros: -1, Period: period}
	if l.BudgetMicros > 0 {
		b.RemainingMicros = max(l.BudgetMicros-spent-held, 0)
	}
	return b
}

// Defaults of the ledgers' options.
const (
	// HoldTTL is how long a hold counts when its turn never ends.
	HoldTTL = time.Hour
	// SettledTTL is how long a settled request id is remembered, so that
	// a replayed record is not debited twice.
	SettledTTL = 24 * time.Hour
)
