package scheduler

import (
	"time"

	"github.com/relaykit/responsesrelay/internal/knob"
)

// HealthPolicy is how the Scheduler reads upstream outcomes: how long each
// kind of failure benches an account, and when a sticky account is left
// for another. The zero HealthPolicy is the default: a zero field takes the
// value its doc gives, a negative one turns that behaviour off. Observe
// lists which outcome leads to which cooldown.
type HealthPolicy struct {
	// MaxCooldown caps every cooldown, a 429's announced reset and events
	// passed to Apply included. 0: 2 h; negative: no cap.
	MaxCooldown time.Duration

	// UnhealthyAfter is how many server-side failures in a row (5xx, 408,
	// connection and stream errors) cool an account down for
	// UnhealthyCooldown; each further one renews it. 0: 3; negative: never
	// (the error rate still rises and steers Select away).
	UnhealthyAfter int
	// UnhealthyCooldown is that cooldown. 0: 5 s; negative: none.
	UnhealthyCooldown time.Duration

	// RateLimitBackoff is the cooldown after a 429 that announces no reset;
	// it doubles with each such 429 in a row, up to 60 times this value.
	// 0: 5 s (so at most 5 min); negative: no cooldown for such a 429.
	RateLimitBackoff time.Duration

	// AuthCooldown benches an account whose credentials the upstream
	// refused: a 401, or a 403 whose body is not an HTML page. 0: 10 min;
	// negative: none.
	AuthCooldown time.Duration

	// PaymentCooldown benches an account out of credit: a 402, or a 429
	// saying insufficient_quota. 0: 1 h; negative: none.
	PaymentCooldown time.Duration

	// OverloadCooldown benches an account the upstream is shedding load
	// from: a 529, a 503 saying "overloaded", OutcomeOverloaded. 0: 30 s;
	// negative: none.
	OverloadCooldown time.Duration

	// ErrorHalfLife is how fast an account's error rate fades without new
	// outcomes, so that an account left alone after a bad spell is not
	// held back forever. 0: 1 min; negative: it never fades.
	ErrorHalfLife time.Duration

	// SlowTTFT is the average time to first output above which a sticky
	// account is left for another (as is one whose error rate is above
	// 50 %). 0: 15 s; negative: never for slowness.
	SlowTTFT time.Duration
}

// resolved returns p with its zero fields set to their defaults.
func (p HealthPolicy) resolved() HealthPolicy {
	return HealthPolicy{
		MaxCooldown:       knob.Or(p.MaxCooldown, 2*time.Hour),
		UnhealthyAfter:    knob.Or(p.UnhealthyAfter, 3),
		UnhealthyCooldown: knob.Or(p.UnhealthyCooldown, 5*time.Second),
		RateLimitBackoff:  knob.Or(p.RateLimitBackoff, 5*time.Second),
		AuthCooldown:      knob.Or(p.AuthCooldown, 10*time.Minute),
		PaymentCooldown:   knob.Or(p.PaymentCooldown, time.Hour),
		OverloadCooldown:  knob.Or(p.OverloadCooldown, 30*time.Second),
		ErrorHalfLife:     knob.Or(p.ErrorHalfLife, time.Minute),
		SlowTTFT:          knob.Or(p.SlowTTFT, 15*time.Second),
	}
}

// backoff is the cooldown for the n-th 429 in a row without a reset: first
// doubled per step, capped at 60 times first; negative when first is.
func backoff(first time.Duration, n int) time.Duration {
	if first < 0 {
		return first
	}
	limit := 60 * first
	if n > 10 { // 2^10 > 60: capped, and the shift cannot overflow
		return limit
	}
	return min(first<<(n-1), limit)
}
