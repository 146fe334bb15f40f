package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/tidwall/gjson"

	"github.com/relaykit/responsesrelay/examples/internal/redistest"
	"github.com/relaykit/responsesrelay/examples/internal/testservice"
	"github.com/relaykit/responsesrelay/internal/relaytestenv"
	"github.com/relaykit/responsesrelay/relay/relaytest"
)

// twoInstances is two relayd servers sharing one Redis and one fake with
// the given accounts. Account and user names get a random suffix, so that
// runs never share Redis keys; the returned names are those of the config.
func twoInstances(t *testing.T, accounts []string, tweak func(*Config)) (a, b *env, names []string, alice string) {
	t.Helper()
	url := redistest.URL(t)
	suffix := "-" + randomHex(4)
	for _, n := range accounts {
		names = append(names, n+suffix)
	}
	alice = "alice" + suffix
	up := relaytest.NewServer()
	cfg := func(c *Config) {
		c.Redis = url
		c.APIKeys[0].UserID = alice
		c.APIKeys[1].UserID += suffix
		if tweak != nil {
			tweak(c)
		}
	}
	return newEnvOn(t, up, names, cfg), newEnvOn(t, up, names, cfg), names, alice
}

// postAsync sends a JSON turn in the background; the channel gets its
// status and body.
func postAsync(e *env, body string) <-chan string {
	out := make(chan string, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, e.ts.URL+"/v1/responses", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+keyAlice)
		resp, err := e.ts.Client().Do(req)
		if err != nil {
			out <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		out <- resp.Status + " " + string(b)
	}()
	return out
}

// A user allowed one turn at a time who sends one turn to each instance
// has one upstream at a time: the second waits for the first.
func TestRedisUserLimitAcrossInstances(t *testing.T) {
	a, b, acct, alice := twoInstances(t, []string{"a1"}, func(c *Config) { c.APIKeys[0].Concurrency = 1 })
	hold := make(chan struct{})
	a.up.Script(acct[0], relaytest.Step{Hold: hold})

	first := postAsync(a, `{"model":"gpt-5","input":"first"}`)
	if err := a.up.Wait(t.Context(), func() bool { return a.up.InFlight(acct[0]) == 1 }); err != nil {
		t.Fatal(err)
	}
	second := postAsync(b, `{"model":"gpt-5","input":"second"}`)
	waitUntil(t, "the second turn to queue for alice's slot", func() bool { return b.srv.limiter.Waiting("user:"+alice) == 1 })
	if n := len(a.up.Requests()); n != 1 {
		t.Fatalf("upstream requests while alice holds her slot on the other instance: %d", n)
	}
	close(hold)
	for _, ch := range []<-chan string{first, second} {
		if res := <-ch; !strings.HasPrefix(res, "200 ") {
			t.Fatalf("turn: %s", res)
		}
	}
	if n := a.up.MaxInFlight(acct[0]); n != 1 {
		t.Fatalf("alice had %d turns upstream at once", n)
	}
	if ra, rb := len(a.rows()), len(b.rows()); ra != 1 || rb != 1 {
		t.Fatalf("rows %d and %d, want 1 each", ra, rb)
	}
}

// A previous_response_id made through one instance lands, through the
// other, on the account that made it: the binding lives in Redis.
func TestRedisStickyAcrossInstances(t *testing.T) {
	a, b, accts, _ := twoInstances(t, []string{"x", "y"}, nil)
	// Each round has even odds of picking the other account without the
	// shared binding; eight rounds make a lucky pass unlikely (1 in 256).
	for range 8 {
		resp, body := a.post(`{"model":"gpt-5","input":"first"}`, "Authorization", "Bearer "+keyAlice)
		if resp.StatusCode != 200 {
			t.Fatalf("first: %d %s", resp.StatusCode, body)
		}
		id := gjson.GetBytes(body, "id").String()
		reqs := a.up.Requests()
		made := reqs[len(reqs)-1].Account

		resp, body = b.post(`{"model":"gpt-5","input":"next","previous_response_id":"`+id+`"}`, "Authorization", "Bearer "+keyAlice)
		if resp.StatusCode != 200 {
			t.Fatalf("continued on the other instance: %d %s", resp.StatusCode, body)
		}
		reqs = a.up.Requests()
		if got := reqs[len(reqs)-1].Account; got != made {
			t.Fatalf("%s was made on %s, continued on %s", id, made, got)
		}
	}
	for _, n := range accts {
		if relaytestenv.AccountInFlight(a.srv.sched, n) != 0 || relaytestenv.AccountInFlight(b.srv.sched, n) != 0 {
			t.Fatalf("account %s: slots held", n)
		}
	}
}

// A 429 seen by one instance benches the account on the other too.
func TestRedisCooldownAcrossInstances(t *testing.T) {
	url := redistest.URL(t)
	opts, _ := redis.ParseURL(url)
	rc := redis.NewClient(opts)
	defer rc.Close()
	channel := fmt.Sprintf("relay:db%d:account-events", opts.DB)
	subscribers := func() int64 {
		m, err := rc.PubSubNumSub(t.Context(), channel).Result()
		if err != nil {
			t.Fatal(err)
		}
		return m[channel]
	}
	before := subscribers()
	a, b, acct, _ := twoInstances(t, []string{"main", "backup"}, func(c *Config) { c.Accounts[1].Priority = 1 })
	// Pub/sub keeps no message for a subscriber that is not there yet.
	waitUntil(t, "both instances to subscribe", func() bool { return subscribers() >= before+2 })

	a.up.Script(acct[0], relaytest.Step{Status: 429, Header: http.Header{"Retry-After": {"120"}}})
	if resp, body := a.post(`{"model":"gpt-5","input":"x"}`, "Authorization", "Bearer "+keyAlice); resp.StatusCode != 200 {
		t.Fatalf("failover: %d %s", resp.StatusCode, body)
	}
	if relaytestenv.CoolingUntil(a.srv.sched, acct[0]).Before(time.Now().Add(time.Minute)) {
		t.Fatalf("instance a: %s cooling until %v", acct[0], relaytestenv.CoolingUntil(a.srv.sched, acct[0]))
	}
	waitUntil(t, "instance b to bench "+acct[0], func() bool {
		return relaytestenv.CoolingUntil(b.srv.sched, acct[0]).After(time.Now().Add(time.Minute))
	})
	if resp, body := b.post(`{"model":"gpt-5","input":"y"}`, "Authorization", "Bearer "+keyAlice); resp.StatusCode != 200 {
		t.Fatalf("on b: %d %s", resp.StatusCode, body)
	}
	count := map[string]int{}
	for _, r := range a.up.Requests() {
		count[r.Account]++
	}
	if count[acct[0]] != 1 || count[acct[1]] != 2 {
		t.Fatalf("requests per account = %v; want the benched one tried once", count)
	}
}

// A Redis that does not answer stops relayd at start, with an error that
// names the server but not its password.
func TestRedisUnreachableAtStart(t *testing.T) {
	addr := testservice.ClosedAddr(t)
	err := startFails(t, "Redis", func(cfg *Config) {
		cfg.Usage = UsageConfig{DSN: t.TempDir() + "/usage.db"}
		cfg.Redis = "redis://relayd:pw-secret-9@" + addr + "/3"
	})
	if msg := err.Error(); !strings.Contains(msg, "redis at "+addr+"/3") || strings.Contains(msg, "pw-secret") {
		t.Fatalf("error = %v", err)
	}
}
