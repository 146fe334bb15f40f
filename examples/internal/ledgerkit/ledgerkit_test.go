package ledgerkit

import (
	"math"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/relaykit/responsesrelay/billing"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestMinuteAndRetryAfter(t *testing.T) {
	for _, c := range []struct {
		t      time.Time
		minute int64
		retry  time.Duration
	}{
		{time.Unix(0, 0), 0, time.Minute},
		{time.Unix(59, 999_000_000), 0, time.Millisecond},
		{time.Unix(60, 0), 1, time.Minute},
		{time.Unix(-1, 0), -1, time.Second}, // before 1970: floored, not truncated
		{time.Date(2026, 3, 10, 12, 0, 20, 0, time.UTC), 29552400, 40 * time.Second},
	} {
		if got := Minute(c.t); got != c.minute {
			t.Errorf("Minute(%v) = %d, want %d", c.t, got, c.minute)
		}
		if got := RetryAfter(c.t); got != c.retry {
			t.Errorf("RetryAfter(%v) = %v, want %v", c.t, got, c.retry)
		}
	}
}

// A scope with no id and no limits is left out; with limits it stays,
// so limits are never dropped.
func TestScopes(t *testing.T) {
	lim := billing.Limits{RPM: 1}
	for _, c := range []struct {
		key, user string
		kl, ul    billing.Limits
		want      []string
	}{
		{"k", "u", billing.Limits{}, billing.Limits{}, []string{"key:k", "user:u"}},
		{"", "", billing.Limits{}, billing.Limits{}, nil},
		{"", "u", lim, billing.Limits{}, []string{"key:", "user:u"}},
		{"k", "", billing.Limits{}, lim, []string{"key:k", "user:"}},
		{"k", "", billing.Limits{}, billing.Limits{}, []string{"key:k"}},
	} {
		var got []string
		for _, s := range Scopes(c.key, c.kl, c.user, c.ul) {
			got = append(got, s.Kind+":"+s.ID)
		}
		if len(got) != len(c.want) || (len(got) > 0 && (got[0] != c.want[0] || got[len(got)-1] != c.want[len(c.want)-1])) {
			t.Errorf("Scopes(%q, %q) = %v, want %v", c.key, c.user, got, c.want)
		}
	}
}

func TestAmountsAndRemaining(t *testing.T) {
	if Amount(-5) != 0 || Amount(math.MaxInt64) != MaxAmount || Amount(7) != 7 {
		t.Fatal("Amount does not clamp to [0, 2^53]")
	}
	r := Remaining(billing.Limits{RPM: 3, TPM: 100, BudgetMicros: 1000}, 4, 150, 900, 300)
	if r != (billing.Remaining{}) {
		t.Fatalf("overrun Remaining %+v, want zeros (a negative field reads as unlimited)", r)
	}
	if r := Remaining(billing.Limits{}, 4, 150, 900, 300); r != billing.Unlimited {
		t.Fatalf("unlimited Remaining %+v", r)
	}
	b := Balance(billing.Limits{BudgetMicros: 1000}, "total", 900, 300, 2)
	if b != (billing.Balance{SpentMicros: 900, HeldMicros: 300, Holds: 2, RemainingMicros: 0, Period: "total"}) {
		t.Fatalf("Balance %+v", b)
	}
}

// The denials read as billing.MemoryLedger's.
func TestDenials(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 20, 0, time.UTC)
	d := RequestsDenial(Scope{Key, "k", billing.Limits{RPM: 3}}, 3, now)
	if d.Status != 429 || d.Type != "requests" || d.Code != "rate_limit_exceeded" || d.RetryAfter != 40*time.Second ||
		d.Message != "Rate limit reached for requests per minute (RPM) of this API key: limit 3, used 3, requested 1. Please try again in 40s." {
		t.Fatalf("%+v", d)
	}
	d = TokensDenial(Scope{User, "u", billing.Limits{TPM: 100}}, 90, 20, now)
	if d.Type != "tokens" || d.Message != "Rate limit reached for tokens per minute (TPM) of this user: limit 100, used 90, requested 20. Please try again in 40s." {
		t.Fatalf("%+v", d)
	}
	d = BudgetDenial(Scope{User, "u", billing.Limits{BudgetMicros: 1, Period: billing.PeriodDay}})
	if d.Status != 0 || d.Type != "" || d.Message != "The budget of this user for today (UTC) is spent." {
		t.Fatalf("%+v", d)
	}
}
