package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/tidwall/gjson"

	"github.com/relaykit/responsesrelay/examples/internal/redistest"
	"github.com/relaykit/responsesrelay/examples/redisstore"
	"github.com/relaykit/responsesrelay/relay/relaytest"
)

// roundTrips records what relayd's Redis client sends: a command or a
// pipeline is one round trip. Left out: the limiter's lease refresher (a
// pipeline of one-key scripts, every 20 s while leases are held), which is
// background work, not a turn's; a new connection's handshake; a script
// run refused NOSCRIPT (sent again with EVAL, which counts).
type roundTrips struct {
	mu  sync.Mutex
	log []string
}

func (r *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (r *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "hello" { // a new pooled connection's handshake
			return next(ctx, cmd)
		}
		i := r.add(describe(cmd))
		err := next(ctx, cmd)
		if redis.HasErrorPrefix(err, "NOSCRIPT") {
			// Redis forgot the script (another test's SCRIPT FLUSH): the
			// EVAL that follows is the call.
			r.drop(i)
		}
		return err
	}
}

func (r *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if !refreshes(cmds) && !handshake(cmds) {
			var parts []string
			for _, c := range cmds {
				parts = append(parts, describe(c))
			}
			r.add("pipeline[" + strings.Join(parts, "; ") + "]")
		}
		return next(ctx, cmds)
	}
}

func (r *roundTrips) add(s string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.log = append(r.log, s)
	return len(r.log) - 1
}

func (r *roundTrips) drop(i int) {
	r.mu.Lock()
	r.log[i] = ""
	r.mu.Unlock()
}

// since returns the round trips after the first n.
func (r *roundTrips) since(n int) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, s := range r.log[n:] {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

func (r *roundTrips) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.log)
}

// describe names a command and its keys' count, e.g. "evalsha (7 keys)".
func describe(c redis.Cmder) string {
	args := c.Args()
	if name := c.Name(); (name == "evalsha" || name == "eval") && len(args) > 2 {
		return fmt.Sprintf("%s (%v keys)", name, args[2])
	}
	return c.Name()
}

// handshake reports the pipeline go-redis sends on a new connection.
func handshake(cmds []redis.Cmder) bool {
	for _, c := range cmds {
		if c.Name() != "client" {
			return false
		}
	}
	return len(cmds) > 0
}

// refreshes reports a pipeline of lease refreshes: one-key scripts on a
// slot's leases.
func refreshes(cmds []redis.Cmder) bool {
	for _, c := range cmds {
		args := c.Args()
		if name := c.Name(); name != "evalsha" && name != "eval" || len(args) < 4 || fmt.Sprint(args[2]) != "1" ||
			!strings.HasSuffix(fmt.Sprint(args[3]), "}") {
			return false
		}
	}
	return len(cmds) > 0
}

// redisSlots counts the slots Redis holds for alice and the accounts,
// through a client of its own (whose calls nobody counts).
func redisSlots(t *testing.T, alice string, accts []string) func() int {
	opts, err := redis.ParseURL(redistest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opts)
	l := redisstore.NewLimiter(c, nil)
	t.Cleanup(func() { l.Close(); c.Close() })
	return func() int {
		total := 0
		for _, key := range append([]string{"user:" + alice}, prefixed("account:", accts)...) {
			held, _, err := l.Count(context.Background(), key)
			if err != nil {
				t.Fatal(err)
			}
			total += held
		}
		return total
	}
}

func prefixed(p string, names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = p + n
	}
	return out
}

// limitAccounts gives every account a slot limit, so that account slots
// are leases in Redis (an unlimited account's are not).
func limitAccounts(c *Config) {
	for i := range c.Accounts {
		c.Accounts[i].Concurrency = 4
	}
}

// A served turn through relayd with Redis costs two round trips: one
// script takes the user's slot and the account's (reading the bindings of
// previous_response_id and the session), one gives both back and writes
// the turn's binding. The same holds for a streamed turn, a turn that
// continues a previous response (it lands on the account that made it),
// and a turn with a session key.
func TestRedisTwoRoundTripsPerTurn(t *testing.T) {
	e, _, accts, alice := twoInstances(t, []string{"x", "y", "z"}, limitAccounts)
	held := redisSlots(t, alice, accts)
	rt := &roundTrips{}
	e.srv.rdb.AddHook(rt)
	// The first turn teaches Redis the scripts (NOSCRIPT, then EVAL).
	if resp, body := e.post(`{"model":"gpt-5","input":"warm up"}`, "Authorization", "Bearer "+keyAlice); resp.StatusCode != 200 {
		t.Fatalf("warm-up: %d %s", resp.StatusCode, body)
	}
	waitUntil(t, "the warm-up's slots to leave Redis", func() bool { return held() == 0 })

	prev, session := "", "s-"+randomHex(4)
	turns := []struct{ name, body, session string }{
		{"json", `{"model":"gpt-5","input":"a"}`, ""},
		{"json continued", `{"model":"gpt-5","input":"b","previous_response_id":"%s"}`, ""},
		{"stream continued", `{"model":"gpt-5","input":"c","stream":true,"previous_response_id":"%s"}`, ""},
		{"stream", `{"model":"gpt-5","input":"d","stream":true}`, ""},
		{"stream with a session", `{"model":"gpt-5","input":"e","stream":true}`, session},
		{"json with a session", `{"model":"gpt-5","input":"f"}`, session},
	}
	for _, turn := range turns {
		body := turn.body
		if strings.Contains(body, "%s") {
			body = fmt.Sprintf(body, prev)
		}
		hdr := []string{"Authorization", "Bearer " + keyAlice}
		if turn.session != "" {
			hdr = append(hdr, "Session_id", turn.session)
		}
		n := rt.count()
		resp, got := e.post(body, hdr...)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", turn.name, resp.StatusCode, got)
		}
		waitUntil(t, "the turn's slots to leave Redis", func() bool { return held() == 0 })
		if trips := rt.since(n); len(trips) != 2 {
			t.Fatalf("%s: %d round trips, want 2: %v", turn.name, len(trips), trips)
		}
		reqs := e.up.Requests()
		if strings.Contains(turn.body, "previous_response_id") && reqs[len(reqs)-1].Account != reqs[len(reqs)-2].Account {
			t.Fatalf("%s: continued %s on another account", turn.name, prev)
		}
		if resp.Header.Get("Content-Type") == "application/json" {
			prev = gjson.GetBytes(got, "id").String()
		} else {
			evs, err := relaytest.ReadSSE(strings.NewReader(string(got)))
			if err != nil || len(evs) == 0 {
				t.Fatalf("%s: %v", turn.name, err)
			}
			prev = gjson.GetBytes(evs[len(evs)-1].Data, "response.id").String()
		}
	}
}

// A continuation sent to the other instance, which did not see the
// binding made, still lands on the account that made the response: the
// one step read the binding, and the account it names is taken next, at
// a cost of up to 5 round trips instead of 2.
func TestRedisContinuedOnTheOtherInstance(t *testing.T) {
	a, b, accts, alice := twoInstances(t, []string{"x", "y", "z"}, limitAccounts)
	held := redisSlots(t, alice, accts)
	rt := &roundTrips{}
	b.srv.rdb.AddHook(rt)
	for range 6 {
		resp, body := a.post(`{"model":"gpt-5","input":"first"}`, "Authorization", "Bearer "+keyAlice)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("first: %d %s", resp.StatusCode, body)
		}
		reqs := a.up.Requests()
		made := reqs[len(reqs)-1].Account
		id := gjson.GetBytes(body, "id").String()
		n := rt.count()
		resp, body = b.post(`{"model":"gpt-5","input":"next","previous_response_id":"`+id+`"}`, "Authorization", "Bearer "+keyAlice)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("continued: %d %s", resp.StatusCode, body)
		}
		reqs = a.up.Requests()
		if got := reqs[len(reqs)-1].Account; got != made {
			t.Fatalf("%s made on %s, continued on %s", id, made, got)
		}
		waitUntil(t, "the turn's slots to leave Redis", func() bool { return held() == 0 })
		// The one step guessed no binding: the account it took goes back
		// and the bound one is taken, each a call of its own, and they go
		// back apart. One call each would be six (user slot, binding
		// read, account slot, binding written, two releases).
		if trips := rt.since(n); len(trips) > 5 {
			t.Fatalf("continued on the other instance: %d round trips: %v", len(trips), trips)
		}
	}
}

// A key without a user limit keeps its account's slot after each turn
// (redis_slot_linger): the next new conversation through the same
// instance costs one round trip (its binding written), a continuation two
// (its binding read, the new one written), and the slot is taken once.
// The slot goes back when the linger is up, and at once when relayd stops.
func TestRedisSlotLinger(t *testing.T) {
	linger := "1m" // the first instance: nothing goes back on its own
	e, other, accts, _ := twoInstances(t, []string{"x", "y", "z"}, func(c *Config) {
		limitAccounts(c)
		c.RedisSlotLinger, linger = linger, "20ms"
	})
	held := redisSlots(t, "bob", accts) // bob's slots are the accounts' alone
	rt := &roundTrips{}
	e.srv.rdb.AddHook(rt)
	post := func(env *env, name, body string) []byte {
		t.Helper()
		resp, got := env.post(body, "Authorization", "Bearer "+keyBob)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", name, resp.StatusCode, got)
		}
		return got
	}
	post(e, "warm-up", `{"model":"gpt-5","input":"warm up"}`)
	if n := held(); n != 1 {
		t.Fatalf("after the warm-up Redis holds %d slots, want the one kept", n)
	}

	prev := ""
	turns := []struct {
		name, body string
		trips      int
	}{
		{"json", `{"model":"gpt-5","input":"a"}`, 1},
		{"stream", `{"model":"gpt-5","input":"b","stream":true}`, 1},
		{"json continued", `{"model":"gpt-5","input":"c","previous_response_id":"%s"}`, 2},
		{"stream continued", `{"model":"gpt-5","input":"d","stream":true,"previous_response_id":"%s"}`, 2},
	}
	for _, turn := range turns {
		body := turn.body
		if strings.Contains(body, "%s") {
			body = fmt.Sprintf(body, prev)
		}
		n := rt.count()
		got := post(e, turn.name, body)
		if trips := rt.since(n); len(trips) != turn.trips {
			t.Fatalf("%s: %d round trips, want %d: %v", turn.name, len(trips), turn.trips, trips)
		}
		if n := held(); n != 1 {
			t.Fatalf("%s: Redis holds %d slots, want the one kept", turn.name, n)
		}
		reqs := e.up.Requests()
		if strings.Contains(turn.body, "previous_response_id") && reqs[len(reqs)-1].Account != reqs[len(reqs)-2].Account {
			t.Fatalf("%s: continued %s on another account", turn.name, prev)
		}
		prev = responseID(t, got)
	}

	// The binding is in Redis when the answer is: the other instance
	// continues on the same account.
	post(other, "continued elsewhere", `{"model":"gpt-5","input":"e","previous_response_id":"`+prev+`"}`)
	reqs := e.up.Requests()
	if reqs[len(reqs)-1].Account != reqs[len(reqs)-2].Account {
		t.Fatal("the other instance continued on another account")
	}
	// The other instance lingers 20 ms: its slot goes back on its own.
	waitUntil(t, "the other instance's kept slot to go back", func() bool { return held() == 1 })

	if err := e.srv.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := held(); n != 0 {
		t.Fatalf("after relayd stopped Redis holds %d slots", n)
	}
}

// responseID is the id of a JSON answer or of a stream's last event.
func responseID(t *testing.T, got []byte) string {
	t.Helper()
	if id := gjson.GetBytes(got, "id").String(); id != "" {
		return id
	}
	evs, err := relaytest.ReadSSE(strings.NewReader(string(got)))
	if err != nil || len(evs) == 0 {
		t.Fatalf("no response id in %q: %v", got, err)
	}
	return gjson.GetBytes(evs[len(evs)-1].Data, "response.id").String()
}

// One account with room for one turn, and turns of a key without a user
// limit alternating between two instances: an account with one slot keeps
// none (the other instance's next turn would wait for it), so every turn
// gives its slot back before its answer ends. An account with three keeps
// one, and the other instance's turns are still served at once.
func TestRedisSlotLingerAlternating(t *testing.T) {
	for _, conc := range []int{1, 3} {
		a, b, accts, _ := twoInstances(t, []string{"x"}, func(c *Config) {
			c.Accounts[0].Concurrency = conc
			c.RedisSlotLinger = "1m"
		})
		held := redisSlots(t, "bob", accts)
		for i := range 6 {
			e := a
			if i%2 == 1 {
				e = b
			}
			resp, got := e.post(`{"model":"gpt-5","input":"turn"}`, "Authorization", "Bearer "+keyBob)
			if resp.StatusCode != 200 {
				t.Fatalf("concurrency %d, turn %d: %d %s", conc, i, resp.StatusCode, got)
			}
			want := 0 // nothing kept
			if conc == 3 {
				want = min(i+1, 2) // one kept on each instance
			}
			if n := held(); n != want {
				t.Fatalf("concurrency %d, turn %d: Redis holds %d slots, want %d", conc, i, n, want)
			}
		}
		for _, e := range []*env{a, b} {
			if err := e.srv.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		if n := held(); n != 0 {
			t.Fatalf("concurrency %d: %d slots held after both stopped", conc, n)
		}
	}
}
