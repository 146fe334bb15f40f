package scheduler

import (
	"context"
	"errors"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"
)

func status(code int, body string, kv ...string) Outcome {
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return Outcome{Kind: OutcomeStatus, Status: code, Header: h, Body: []byte(body)}
}

// cooling is how much longer the account cools down.
func (f *fixture) cooling(id string) time.Duration {
	u := f.s.CoolingUntil(id)
	if u.IsZero() {
		return 0
	}
	return u.Sub(f.clock.Now())
}

func TestObserveRateLimitCooldown(t *testing.T) {
	tests := []struct {
		name    string
		outcome Outcome
		max     time.Duration
		want    time.Duration
	}{
		{"retry-after", status(429, "", "Retry-After", "7"), 0, 7 * time.Second},
		{"retry-after-ms", status(429, "", "Retry-After-Ms", "1500"), 0, 1500 * time.Millisecond},
		{"x-ratelimit-reset-tokens", status(429, "", "X-Ratelimit-Reset-Tokens", "6m0s", "X-Ratelimit-Remaining-Tokens", "0"), 0, 6 * time.Minute},
		{"codex primary", status(429, "", "X-Codex-Primary-Used-Percent", "100", "X-Codex-Primary-Reset-After-Seconds", "900"), 0, 15 * time.Minute},
		{"codex window not exhausted: backoff", status(429, "", "X-Codex-Primary-Used-Percent", "80", "X-Codex-Primary-Reset-After-Seconds", "900"), 0, 5 * time.Second},
		{"no header: backoff", status(429, ""), 0, 5 * time.Second},
		{"clamped to the default max", status(429, "", "Retry-After", "86400"), 0, 2 * time.Hour},
		{"clamped to MaxCooldown", status(429, "", "Retry-After", "600"), time.Minute, time.Minute},
		{"insufficient quota", status(429, `{"error":{"code":"insufficient_quota"}}`), 0, time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, acct("a"))
			f.s.Health.MaxCooldown = tt.max
			f.s.Observe("a", tt.outcome)
			if got := f.cooling("a"); got != tt.want {
				t.Fatalf("cooldown %s, want %s", got, tt.want)
			}
			evs := f.events.take()
			if len(evs) != 1 || evs[0].Status != 429 || !evs[0].Until.Equal(f.clock.Now().Add(tt.want)) {
				t.Fatalf("events %+v", evs)
			}
		})
	}
}

func TestObserveRateLimitBackoff(t *testing.T) {
	f := newFixture(t, acct("a"))
	for _, want := range []time.Duration{5, 10, 20, 40, 80, 160, 300, 300} {
		want *= time.Second
		f.s.Observe("a", status(429, ""))
		if got := f.cooling("a"); got != want {
			t.Fatalf("cooldown %s, want %s", got, want)
		}
		f.clock.Advance(want)
	}
	f.s.Observe("a", Outcome{Kind: OutcomeSuccess})
	f.s.Observe("a", status(429, ""))
	if got := f.cooling("a"); got != 5*time.Second {
		t.Fatalf("after a success the backoff restarts at 5s, got %s", got)
	}
}

func TestObserveStatusPenalties(t *testing.T) {
	tests := []struct {
		name    string
		outcome Outcome
		want    time.Duration
		kind    string // "" no event
	}{
		{"401", status(401, `{"error":{"type":"authentication_error"}}`), 10 * time.Minute, EventUnauthorized},
		{"402", status(402, `{}`), time.Hour, EventPaymentRequired},
		{"403 json", status(403, `{"error":{"type":"permission_error"}}`), 10 * time.Minute, EventForbidden},
		{"403 empty", status(403, ""), 10 * time.Minute, EventForbidden},
		{"403 html", status(403, "<!DOCTYPE html><html><title>Attention Required</title></html>"), 0, ""},
		{"403 html after whitespace", status(403, "\r\n  <html><body>blocked</body></html>"), 0, ""},
		{"529", status(529, `{"error":{"type":"overloaded_error"}}`), 30 * time.Second, EventOverloaded},
		{"503 overloaded", status(503, `{"error":{"message":"The server is Overloaded"}}`), 30 * time.Second, EventOverloaded},
		{"in-band overloaded", Outcome{Kind: OutcomeOverloaded, Status: 200}, 30 * time.Second, EventOverloaded},
		{"one 500", status(500, ""), 0, ""},
		{"one 408", status(408, ""), 0, ""},
		{"one connection error", Outcome{Kind: OutcomeConnError, Err: errors.New("dial tcp: refused")}, 0, ""},
		{"400 status", status(400, `{"error":{"code":"context_length_exceeded"}}`), 0, ""},
		{"404 status", status(404, ""), 0, ""},
		{"client error", Outcome{Kind: OutcomeClientError, Status: 422}, 0, ""},
		{"success", Outcome{Kind: OutcomeSuccess, TTFT: time.Second}, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, acct("a"))
			f.s.Observe("a", tt.outcome)
			if got := f.cooling("a"); got != tt.want {
				t.Fatalf("cooldown %s, want %s", got, tt.want)
			}
			evs := f.events.take()
			if tt.kind == "" {
				if len(evs) != 0 {
					t.Fatalf("unexpected events %+v", evs)
				}
				return
			}
			if len(evs) != 1 || evs[0].Kind != tt.kind || evs[0].AccountID != "a" || evs[0].Reason == "" {
				t.Fatalf("events %+v, want one %s", evs, tt.kind)
			}
		})
	}
}

func TestObserveConsecutiveFailures(t *testing.T) {
	failures := map[string]Outcome{
		"500":          status(500, ""),
		"502":          status(502, "<html>bad gateway</html>"),
		"408":          status(408, ""),
		"conn error":   {Kind: OutcomeConnError, Err: errors.New("connection reset")},
		"stream error": {Kind: OutcomeStreamError, Err: errors.New("idle timeout")},
	}
	for name, fail := range failures {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, acct("a"))
			f.s.Observe("a", fail)
			f.s.Observe("a", fail)
			if got := f.cooling("a"); got != 0 {
				t.Fatalf("cooling %s after two failures", got)
			}
			f.s.Observe("a", fail)
			if got := f.cooling("a"); got != 5*time.Second {
				t.Fatalf("cooldown %s after three failures, want 5s", got)
			}
			evs := f.events.take()
			if len(evs) != 1 || evs[0].Kind != EventUnhealthy || evs[0].Status != fail.Status {
				t.Fatalf("events %+v", evs)
			}
			if fail.Err != nil && !strings.Contains(evs[0].Reason, fail.Err.Error()) {
				t.Fatalf("reason %q does not name the error", evs[0].Reason)
			}

			// A fourth at the same instant extends nothing: no new event.
			f.s.Observe("a", fail)
			if evs := f.events.take(); len(evs) != 0 {
				t.Fatalf("events %+v", evs)
			}
			// After the cooldown, a success recovers and resets the count.
			f.clock.Advance(5 * time.Second)
			f.s.Observe("a", Outcome{Kind: OutcomeSuccess})
			if evs := f.events.take(); len(evs) != 1 || evs[0].Kind != EventRecovered {
				t.Fatalf("events %+v, want recovered", evs)
			}
			f.s.Observe("a", fail)
			f.s.Observe("a", fail)
			if got := f.cooling("a"); got != 0 {
				t.Fatalf("cooling %s: the success did not reset the failure count", got)
			}
		})
	}
}

// TestAccountEventKinds checks every kind once, with its fields.
func TestAccountEventKinds(t *testing.T) {
	f := newFixture(t)
	now := f.clock.Now()
	steps := []struct {
		id      string
		outcome Outcome
		want    AccountEvent
	}{
		{"rl", status(429, "", "Retry-After", "7"), AccountEvent{AccountID: "rl", Kind: EventRateLimited, Status: 429, Until: now.Add(7 * time.Second)}},
		{"auth", status(401, "{}"), AccountEvent{AccountID: "auth", Kind: EventUnauthorized, Status: 401, Until: now.Add(10 * time.Minute)}},
		{"pay", status(402, "{}"), AccountEvent{AccountID: "pay", Kind: EventPaymentRequired, Status: 402, Until: now.Add(time.Hour)}},
		{"deny", status(403, "{}"), AccountEvent{AccountID: "deny", Kind: EventForbidden, Status: 403, Until: now.Add(10 * time.Minute)}},
		{"busy", status(529, ""), AccountEvent{AccountID: "busy", Kind: EventOverloaded, Status: 529, Until: now.Add(30 * time.Second)}},
		{"sick", status(502, ""), AccountEvent{}},
		{"sick", status(502, ""), AccountEvent{}},
		{"sick", status(502, ""), AccountEvent{AccountID: "sick", Kind: EventUnhealthy, Status: 502, Until: now.Add(5 * time.Second)}},
	}
	for i, st := range steps {
		f.s.Observe(st.id, st.outcome)
		evs := f.events.take()
		if st.want.Kind == "" {
			if len(evs) != 0 {
				t.Fatalf("step %d: unexpected %+v", i, evs)
			}
			continue
		}
		if len(evs) != 1 {
			t.Fatalf("step %d: events %+v", i, evs)
		}
		got := evs[0]
		if got.AccountID != st.want.AccountID || got.Kind != st.want.Kind || got.Status != st.want.Status || !got.Until.Equal(st.want.Until) || got.Reason == "" {
			t.Fatalf("step %d: got %+v, want %+v", i, got, st.want)
		}
	}

	f.clock.Advance(2 * time.Hour)
	for _, id := range []string{"rl", "auth", "pay", "deny", "busy", "sick"} {
		f.s.Observe(id, Outcome{Kind: OutcomeSuccess})
		evs := f.events.take()
		if len(evs) != 1 || evs[0].Kind != EventRecovered || evs[0].AccountID != id || !evs[0].Until.IsZero() || evs[0].Status != 0 {
			t.Fatalf("%s: events %+v, want recovered", id, evs)
		}
		// Recovered once only.
		f.s.Observe(id, Outcome{Kind: OutcomeSuccess})
		if evs := f.events.take(); len(evs) != 0 {
			t.Fatalf("%s: second success sent %+v", id, evs)
		}
	}
}

func TestAccountEventOnlyOnChange(t *testing.T) {
	f := newFixture(t, acct("a"))
	// The 429s of several in-flight turns make one event.
	for range 5 {
		f.s.Observe("a", status(429, "", "Retry-After", "7"))
	}
	if evs := f.events.take(); len(evs) != 1 {
		t.Fatalf("%d events for one rate limit, want 1", len(evs))
	}
	// A longer reset is news.
	f.s.Observe("a", status(429, "", "Retry-After", "60"))
	if evs := f.events.take(); len(evs) != 1 || !evs[0].Until.Equal(f.clock.Now().Add(time.Minute)) {
		t.Fatalf("events %+v", evs)
	}
	// A shorter cooldown of another kind changes nothing.
	f.s.Observe("a", status(529, ""))
	if evs := f.events.take(); len(evs) != 0 {
		t.Fatalf("events %+v", evs)
	}
	if got := f.cooling("a"); got != time.Minute {
		t.Fatalf("cooldown %s, want the longer 1m kept", got)
	}

	// Credentials trouble is reported even under a longer cooldown.
	g := newFixture(t, acct("b"))
	g.s.Observe("b", status(402, "{}"))
	g.s.Observe("b", status(401, "{}"))
	evs := g.events.take()
	if len(evs) != 2 || evs[1].Kind != EventUnauthorized || !evs[1].Until.Equal(g.clock.Now().Add(time.Hour)) {
		t.Fatalf("events %+v", evs)
	}
}

func TestRecoveredWaitsForCooldownEnd(t *testing.T) {
	f := newFixture(t, acct("a"))
	f.s.Observe("a", status(429, "", "Retry-After", "7"))
	f.events.take()

	// A turn that started before the 429 may still succeed: the cooldown
	// stands.
	f.clock.Advance(time.Second)
	f.s.Observe("a", Outcome{Kind: OutcomeSuccess})
	if got := f.cooling("a"); got != 6*time.Second {
		t.Fatalf("cooldown %s, want 6s left", got)
	}
	if evs := f.events.take(); len(evs) != 0 {
		t.Fatalf("events %+v before the cooldown ended", evs)
	}
	f.clock.Advance(6 * time.Second)
	f.s.Observe("a", Outcome{Kind: OutcomeSuccess})
	if evs := f.events.take(); len(evs) != 1 || evs[0].Kind != EventRecovered {
		t.Fatalf("events %+v, want recovered", evs)
	}
}

func TestOnAccountEventPanicIsRecovered(t *testing.T) {
	f := newFixture(t, acct("a"))
	f.s.OnAccountEvent = func(context.Context, AccountEvent) { panic("host bug") }
	f.s.Observe("a", status(401, "{}"))
	if got := f.cooling("a"); got != 10*time.Minute {
		t.Fatalf("cooldown %s", got)
	}
	if !strings.Contains(f.logs.String(), "OnAccountEvent panicked") || !strings.Contains(f.logs.String(), "host bug") {
		t.Fatalf("log %q", f.logs.String())
	}
}

// TestOnAccountEventBounded: a hook that blocks holds Observe for
// EventTimeout at most; its context ends then, and the cooldown is in
// place before the hook runs.
func TestOnAccountEventBounded(t *testing.T) {
	f := newFixture(t, acct("a"))
	f.s.EventTimeout = 20 * time.Millisecond
	release := make(chan struct{})
	defer close(release)
	ended := make(chan error, 1)
	f.s.OnAccountEvent = func(ctx context.Context, e AccountEvent) {
		if got := f.cooling("a"); got != 10*time.Minute {
			t.Errorf("cooldown %s when the hook ran", got)
		}
		<-ctx.Done()
		ended <- ctx.Err()
		<-release
	}
	f.s.Observe("a", status(401, "{}"))
	if err := <-ended; err == nil {
		t.Fatal("the hook's context did not end")
	}
	if !strings.Contains(f.logs.String(), "OnAccountEvent did not return in time") {
		t.Fatalf("log %q", f.logs.String())
	}
}

func TestErrorRateAndTTFTAverages(t *testing.T) {
	f := newFixture(t, acct("a"))
	rate := func() float64 {
		st := f.s.lookup("a")
		return st.errorRate(f.clock.Now().UnixNano(), time.Minute)
	}
	near := func(got, want float64) bool { return math.Abs(got-want) < 1e-9 }

	f.s.Observe("a", status(500, ""))
	if got := rate(); !near(got, 0.2) {
		t.Fatalf("error rate %v after one failure, want 0.2", got)
	}
	f.s.Observe("a", status(500, ""))
	if got := rate(); !near(got, 0.36) {
		t.Fatalf("error rate %v, want 0.36", got)
	}
	f.s.Observe("a", Outcome{Kind: OutcomeSuccess})
	if got := rate(); !near(got, 0.288) {
		t.Fatalf("error rate %v, want 0.288", got)
	}
	f.clock.Advance(time.Minute)
	if got := rate(); !near(got, 0.144) {
		t.Fatalf("error rate %v a minute later, want half of 0.288", got)
	}

	f.s.Observe("a", Outcome{Kind: OutcomeSuccess, TTFT: time.Second})
	f.s.Observe("a", Outcome{Kind: OutcomeSuccess, TTFT: 2 * time.Second})
	f.s.Observe("a", Outcome{Kind: OutcomeSuccess}) // unknown TTFT leaves it
	if got := time.Duration(f.s.lookup("a").ttft.Load()); got != 1200*time.Millisecond {
		t.Fatalf("TTFT EWMA %s, want 1.2s", got)
	}
}

func TestRecover(t *testing.T) {
	f := newFixture(t, acct("a"))
	f.s.Observe("a", status(401, "{}"))
	f.events.take()
	f.s.Recover("a")
	if got := f.cooling("a"); got != 0 {
		t.Fatalf("still cooling %s", got)
	}
	if evs := f.events.take(); len(evs) != 1 || evs[0].Kind != EventRecovered {
		t.Fatalf("events %+v", evs)
	}
	if id := f.pick(t, Request{Group: "g"}); id != "a" {
		t.Fatalf("picked %s", id)
	}
	f.s.Recover("a")       // nothing to recover: no event
	f.s.Recover("unknown") // never seen: no-op
	if evs := f.events.take(); len(evs) != 0 {
		t.Fatalf("events %+v", evs)
	}
}

func TestRateLimitedAccountSkippedUntilReset(t *testing.T) {
	f := newFixture(t, acct("a"), acct("b"))
	q := Request{Group: "g", Model: "gpt-5"}
	start := f.clock.Now()
	f.s.Observe("a", status(429, "", "Retry-After", "7"))
	for _, at := range []time.Duration{0, 3 * time.Second, 6999 * time.Millisecond} {
		f.clock.Set(start.Add(at))
		for range 50 {
			if id := f.pick(t, q); id != "b" {
				t.Fatalf("at +%s picked the cooling account %s", at, id)
			}
		}
	}
	f.clock.Set(start.Add(7 * time.Second))
	seen := map[string]int{}
	for range 50 {
		seen[f.pick(t, q)]++
	}
	if seen["a"] == 0 {
		t.Fatalf("a not used again after its reset: %v", seen)
	}
}

// TestApplyRemoteEvent: an event from another instance benches the account
// here without echoing through OnAccountEvent; recovered lifts it.
func TestApplyRemoteEvent(t *testing.T) {
	pool := NewStaticPool()
	pool.Add("g", &Account{ID: "a"})
	pool.Add("g", &Account{ID: "b", Priority: 1})
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	echoed := 0
	s := &Scheduler{Pool: pool, Now: func() time.Time { return now }, OnAccountEvent: func(context.Context, AccountEvent) { echoed++ }}
	s.Apply(AccountEvent{AccountID: "a", Kind: EventRateLimited, Until: now.Add(time.Minute)})
	if got := s.CoolingUntil("a"); !got.Equal(now.Add(time.Minute)) {
		t.Fatalf("cooling until %v", got)
	}
	sel, err := s.Select(context.Background(), Request{Group: "g", Model: "m"})
	if err != nil || sel.Account.ID != "b" {
		t.Fatalf("selected %v, %v", sel, err)
	}
	sel.Release()
	s.Apply(AccountEvent{AccountID: "a", Kind: EventRateLimited, Until: now.Add(time.Second)}) // shorter: ignored
	if got := s.CoolingUntil("a"); !got.Equal(now.Add(time.Minute)) {
		t.Fatalf("a shorter remote cooldown replaced a longer one: %v", got)
	}
	s.Apply(AccountEvent{AccountID: "a", Kind: EventRecovered})
	if !s.CoolingUntil("a").IsZero() || echoed != 0 {
		t.Fatalf("cooling until %v, echoed %d", s.CoolingUntil("a"), echoed)
	}
}
