package relay_test

import (
	"context"
	"fmt"
	"github.com/tidwall/gjson"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/relaykit/responsesrelay/scheduler"
)

// clock is a hand-moved time source shared by the scheduler and handler.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// eventLog collects OnAccountEvent calls.
type eventLog struct {
	mu  sync.Mutex
	evs []scheduler.AccountEvent
}

func (l *eventLog) add(_ context.Context, e scheduler.AccountEvent) {
	l.mu.Lock()
	l.evs = append(l.evs, e)
	l.mu.Unlock()
}

func (l *eventLog) all() []scheduler.AccountEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]scheduler.AccountEvent(nil), l.evs...)
}

// newHealthEnv: "a" preferred over "b", a hand-moved clock, events logged.
func newHealthEnv(t *testing.T) (*env, *clock, *eventLog) {
	e := newPriorityEnvIDs(t, "a", "b")
	clk, log := newClock(), &eventLog{}
	e.sched.Now = clk.Now // the relay's clock too
	e.sched.OnAccountEvent = log.add
	return e, clk, log
}

func newPriorityEnvIDs(t *testing.T, first, second string) *env {
	e := newEnv(t)
	e.addAccount(&scheduler.Account{ID: first, Priority: 0})
	e.addAccount(&scheduler.Account{ID: second, Priority: 1})
	return e
}

// TestRetryAfterBenchesAccount: after a 429 with Retry-After: 7 no request
// reaches the account for 7 s while the other serves; then it is used again.
func TestRetryAfterBenchesAccount(t *testing.T) {
	e, clk, _ := newHealthEnv(t)
	e.up.Script("a", relaytest.Step{Status: 429, Header: http.Header{"Retry-After": {"7"}}})
	if r := e.do(textReq); r.status != 200 {
		t.Fatalf("status %d", r.status)
	}
	for i := 0; i < 5; i++ {
		clk.Advance(time.Second) // up to 5 s after the 429
		if r := e.do(textReq); r.status != 200 {
			t.Fatalf("status %d", r.status)
		}
	}
	clk.Advance(1900 * time.Millisecond) // 6.9 s
	e.do(textReq)
	reqs := e.up.Requests()
	if got := strings.Join(accountsOf(reqs), ","); got != "a,b,b,b,b,b,b,b" {
		t.Fatalf("attempts went to %s", got)
	}
	clk.Advance(200 * time.Millisecond) // 7.1 s
	e.do(textReq)
	if reqs := e.up.Requests(); reqs[len(reqs)-1].Account != "a" {
		t.Fatalf("the account was not used again after its cooldown: %v", accountsOf(reqs))
	}
}

// TestCooldownSources: each upstream signal, driven through the relay,
// benches the account for the documented time and tells the host.
func TestCooldownSources(t *testing.T) {
	httpDate := newClock().Now().Add(90 * time.Second).Format(http.TimeFormat)
	cases := []struct {
		name  string
		step  relaytest.Step
		cool  time.Duration // 0: no cooldown
		event string
	}{
		{"retry-after seconds", rl("Retry-After", "7"), 7 * time.Second, scheduler.EventRateLimited},
		{"retry-after date", rl("Retry-After", httpDate), 90 * time.Second, scheduler.EventRateLimited},
		{"retry-after-ms", rl("Retry-After-Ms", "2500"), 2500 * time.Millisecond, scheduler.EventRateLimited},
		{"x-ratelimit-reset-requests", rl("X-Ratelimit-Reset-Requests", "6m0s", "X-Ratelimit-Remaining-Requests", "0"), 6 * time.Minute, scheduler.EventRateLimited},
		{"x-ratelimit-reset-tokens", rl("X-Ratelimit-Reset-Tokens", "12s", "X-Ratelimit-Remaining-Tokens", "0"), 12 * time.Second, scheduler.EventRateLimited},
		{"reset with quota left is no ban", rl("X-Ratelimit-Reset-Tokens", "12m", "X-Ratelimit-Remaining-Tokens", "5000"), 5 * time.Second, scheduler.EventRateLimited},
		{"codex primary exhausted", rl("X-Codex-Primary-Used-Percent", "100", "X-Codex-Primary-Reset-After-Seconds", "300"), 5 * time.Minute, scheduler.EventRateLimited},
		{"codex secondary exhausted", rl("X-Codex-Secondary-Used-Percent", "100.0", "X-Codex-Secondary-Reset-After-Seconds", "900"), 15 * time.Minute, scheduler.EventRateLimited},
		{"codex window not exhausted", rl("X-Codex-Primary-Used-Percent", "40", "X-Codex-Primary-Reset-After-Seconds", "3000"), 5 * time.Second, scheduler.EventRateLimited},
		{"429 without hints", rl(), 5 * time.Second, scheduler.EventRateLimited},
		{"clamped to max cooldown", rl("Retry-After", "86400"), 2 * time.Hour, scheduler.EventRateLimited},
		{"401", relaytest.Step{Status: 401}, 10 * time.Minute, scheduler.EventUnauthorized},
		{"402", relaytest.Step{Status: 402}, time.Hour, scheduler.EventPaymentRequired},
		{"403 json", relaytest.Step{Status: 403}, 10 * time.Minute, scheduler.EventForbidden},
		{"403 html", relaytest.Step{Status: 403, Header: http.Header{"Content-Type": {"text/html"}}, Body: "<html><body>Access denied by proxy</body></html>"}, 0, ""},
		{"529", relaytest.Step{Status: 529}, 30 * time.Second, scheduler.EventOverloaded},
		{"in-band overloaded", relaytest.Step{End: "refused server_is_overloaded"}, 30 * time.Second, scheduler.EventOverloaded},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e, clk, log := newHealthEnv(t)
			e.up.Script("a", c.step)
			if r := e.do(textReq); r.status != 200 {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			until := coolingUntil(e.sched, "a")
			var got time.Duration
			if !until.IsZero() {
				got = until.Sub(clk.Now())
			}
			if got != c.cool {
				t.Fatalf("cooldown %v, want %v", got, c.cool)
			}
			evs := log.all()
			if c.event == "" {
				if len(evs) != 0 {
					t.Fatalf("events %+v", evs)
				}
				return
			}
			if len(evs) != 1 || evs[0].Kind != c.event || evs[0].AccountID != "a" || !evs[0].Until.Equal(until) {
				t.Fatalf("events %+v", evs)
			}
		})
	}
}

// rl is a 429 carrying only the given headers (the fake's default
// rate-limit headers removed) and a body with no "try again in" hint.
func rl(kv ...string) relaytest.Step {
	h := http.Header{"Retry-After": nil, "X-Ratelimit-Reset-Requests": nil, "X-Ratelimit-Remaining-Requests": nil,
		"X-Ratelimit-Reset-Tokens": nil, "X-Ratelimit-Remaining-Tokens": nil}
	for i := 0; i+1 < len(kv); i += 2 {
		h[http.CanonicalHeaderKey(kv[i])] = []string{kv[i+1]}
	}
	return relaytest.Step{Status: 429, Header: h,
		Body: `{"error":{"message":"Rate limit reached.","type":"rate_limit_error","param":null,"code":"rate_limit_exceeded"}}`}
}

// TestExponentialBackoff: 429s without hints bench for 5 s, doubling per
// consecutive 429 up to 5 min; a success resets it.
func TestExponentialBackoff(t *testing.T) {
	e, clk, _ := newHealthEnv(t)
	want := []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second, 160 * time.Second, 300 * time.Second, 300 * time.Second}
	for i, w := range want {
		e.up.Script("a", rl())
		e.do(textReq)
		until := coolingUntil(e.sched, "a")
		if got := until.Sub(clk.Now()); got != w {
			t.Fatalf("429 #%d: cooldown %v, want %v", i+1, got, w)
		}
		clk.Advance(w)
	}
	e.do(textReq) // success on a
	e.up.Script("a", rl())
	e.do(textReq)
	if got := coolingUntil(e.sched, "a").Sub(clk.Now()); got != 5*time.Second {
		t.Fatalf("after a success the backoff restarts at 5 s; got %v", got)
	}
}

// TestConsecutiveErrorsBench: three 5xx in a row bench an account for 5 s;
// a success in between resets the count.
func TestConsecutiveErrorsBench(t *testing.T) {
	e, clk, log := newHealthEnv(t)
	for i := 0; i < 2; i++ {
		e.up.Script("a", relaytest.Step{Status: 500})
		e.do(textReq)
		if !coolingUntil(e.sched, "a").IsZero() {
			t.Fatalf("benched after %d errors", i+1)
		}
	}
	e.do(textReq) // success on a resets the count
	for i := 0; i < 3; i++ {
		e.up.Script("a", relaytest.Step{Status: 502})
		e.do(textReq)
	}
	if until := coolingUntil(e.sched, "a"); until.Sub(clk.Now()) != 5*time.Second {
		t.Fatalf("cooldown until %v", until)
	}
	evs := log.all()
	if len(evs) == 0 || evs[len(evs)-1].Kind != scheduler.EventUnhealthy {
		t.Fatalf("events %+v", evs)
	}
	clk.Advance(6 * time.Second)
	e.do(textReq)
	evs = log.all()
	if evs[len(evs)-1].Kind != scheduler.EventRecovered {
		t.Fatalf("no recovered event after a success: %+v", evs)
	}
}

// TestStickyAccountCoolingDown: a previous_response_id bound to an account
// that is cooling down goes elsewhere, with the chain sent whole from the
// relay's records: the client gets a normal answer.
func TestStickyAccountCoolingDown(t *testing.T) {
	e, _, _ := newHealthEnv(t)
	r := e.do(textReq)
	prev := jsonField(r.body, "id")
	e.up.Script("a", relaytest.Step{Status: 429, Header: http.Header{"Retry-After": {"60"}}})
	e.do(textReq) // benches a; b serves
	r = e.do(`{"model":"gpt-test","input":"more","previous_response_id":"` + prev + `"}`)
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	reqs := e.up.Requests()
	last := reqs[len(reqs)-1]
	if last.Account != "b" || len(reqs) != 4 {
		t.Fatalf("attempts %v", accountsOf(reqs))
	}
	if gjson.GetBytes(last.Body, "previous_response_id").Exists() {
		t.Fatalf("the moved chain still names the previous response: %s", last.Body)
	}
	if in := gjson.GetBytes(last.Body, "input").Raw; !strings.Contains(in, "Echo: ") || !strings.Contains(in, `"more"`) {
		t.Fatalf("b did not get the whole chain: %s", in)
	}
}

// TestNoAccountReasons: the 503 says why, and the log line has the detail.
func TestNoAccountReasons(t *testing.T) {
	e, clk, _ := newHealthEnv(t)
	for _, a := range []string{"a", "b"} {
		e.up.Script(a, relaytest.Step{Status: 429, Header: http.Header{"Retry-After": {"30"}}})
	}
	if r := e.do(textReq); r.status != 429 {
		t.Fatalf("status %d", r.status)
	}
	r := e.do(textReq)
	if r.status != 503 || r.header.Get("Retry-After") != "30" {
		t.Fatalf("status %d, Retry-After %q", r.status, r.header.Get("Retry-After"))
	}
	if _, msg, _, _ := apiErr(t, r.body); !strings.Contains(msg, "rate limited") {
		t.Fatalf("message %q", msg)
	}
	want := fmt.Sprintf("earliest is back at %s", clk.Now().Add(30*time.Second).UTC().Format(time.RFC3339))
	if logs := e.logs.String(); !strings.Contains(logs, want) {
		t.Fatalf("log lacks %q:\n%s", want, logs)
	}
}

func jsonField(body []byte, key string) string {
	s := string(body)
	i := strings.Index(s, `"`+key+`":"`)
	if i < 0 {
		return ""
	}
	s = s[i+len(key)+4:]
	return s[:strings.IndexByte(s, '"')]
}

// TestSessionEscape: a session bound to an account that is full or no
// longer serves the model is served elsewhere, and the binding moves there.
func TestSessionEscape(t *testing.T) {
	t.Run("full", func(t *testing.T) {
		e := newEnv(t)
		e.addAccount(&scheduler.Account{ID: "a", Concurrency: 1, Priority: 0})
		e.addAccount(&scheduler.Account{ID: "b", Concurrency: 1, Priority: 1})
		e.do(textReq, "session_id", "s") // binds s to a
		release, held := e.holdOne()     // the next request on a is held, keeping a full
		if r := e.do(textReq, "session_id", "s"); r.status != 200 {
			t.Fatalf("status %d", r.status)
		}
		release()
		<-held
		e.do(textReq, "session_id", "s") // the binding moved to b
		got := accountsOf(e.up.Requests())
		if strings.Join(got, ",") != "a,a,b,b" {
			t.Fatalf("attempts %v", got)
		}
	})
	t.Run("model no longer served", func(t *testing.T) {
		e := newEnv(t)
		e.addAccount(&scheduler.Account{ID: "a", Priority: 0})
		e.addAccount(&scheduler.Account{ID: "b", Priority: 1})
		e.do(textReq, "session_id", "s")
		e.pool.Set("g", []*scheduler.Account{
			{ID: "a", BaseURL: e.up.BaseURL("a"), Models: []string{"other-*"}, Concurrency: 8},
			{ID: "b", BaseURL: e.up.BaseURL("b"), Concurrency: 8, Priority: 1},
		})
		e.do(textReq, "session_id", "s")
		if got := accountsOf(e.up.Requests()); strings.Join(got, ",") != "a,b" {
			t.Fatalf("attempts %v", got)
		}
	})
	t.Run("sessions are per API key", func(t *testing.T) {
		e := newEnv(t)
		e.addAccount(&scheduler.Account{ID: "a", Priority: 0, Concurrency: 1})
		e.addAccount(&scheduler.Account{ID: "b", Priority: 1})
		e.subj.APIKeyID = "k-other"
		e.up.Script("a", relaytest.Step{Status: 500})
		e.do(textReq, "session_id", "s") // k-other's session s binds to b
		e.subj.APIKeyID = "k1"
		e.do(textReq, "session_id", "s") // k1's session s is its own: a
		got := accountsOf(e.up.Requests())
		if strings.Join(got, ",") != "a,b,a" {
			t.Fatalf("attempts %v", got)
		}
	})
}

// TestAccountEventKinds: every event kind reaches OnAccountEvent through
// the relay.
func TestAccountEventKinds(t *testing.T) {
	steps := map[string]relaytest.Step{
		scheduler.EventRateLimited:     rl("Retry-After", "3"),
		scheduler.EventUnauthorized:    {Status: 401},
		scheduler.EventPaymentRequired: {Status: 402},
		scheduler.EventForbidden:       {Status: 403},
		scheduler.EventOverloaded:      {Status: 529},
	}
	for kind, step := range steps {
		e, clk, log := newHealthEnv(t)
		e.up.Script("a", step)
		e.do(textReq)
		evs := log.all()
		if len(evs) != 1 || evs[0].Kind != kind || evs[0].Status == 0 || evs[0].Reason == "" {
			t.Fatalf("%s: events %+v", kind, evs)
		}
		clk.Advance(2 * time.Hour)
		e.do(textReq)
		evs = log.all()
		if len(evs) != 2 || evs[1].Kind != scheduler.EventRecovered {
			t.Fatalf("%s: no recovery: %+v", kind, evs)
		}
	}
}
