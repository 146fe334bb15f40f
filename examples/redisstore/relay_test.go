package redisstore_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/tidwall/gjson"

	"github.com/relaykit/responsesrelay/examples/internal/testservice"
	"github.com/relaykit/responsesrelay/examples/redisstore"
	"github.com/relaykit/responsesrelay/internal/relaytestenv"
	"github.com/relaykit/responsesrelay/relay"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/relaykit/responsesrelay/scheduler"
)

// upstream is the relaytest fake behind a counter of the requests in flight
// across all its accounts.
type upstream struct {
	*relaytest.Upstream
	srv      *httptest.Server
	cur, max atomic.Int64
}

func newUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{Upstream: relaytest.New()}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := u.cur.Add(1)
		for m := u.max.Load(); n > m && !u.max.CompareAndSwap(m, n); m = u.max.Load() {
		}
		defer u.cur.Add(-1)
		u.Upstream.ServeHTTP(w, r)
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) baseURL(account string) string { return u.srv.URL + "/" + account + "/v1" }

// instance is one relay process: its own Redis client, Limiter, Events,
// Scheduler and Handler, sharing Redis (and the key prefix) with the others.
type instance struct {
	client *redis.Client
	lim    *redisstore.Limiter
	events *redisstore.Events
	sched  *scheduler.Scheduler
	h      *relay.Handler
	srv    *httptest.Server
}

type cluster struct {
	t     *testing.T
	up    *upstream
	accts []*scheduler.Account
	keys  scheduler.StaticKeys
	subj  relay.Subject
	nodes []*instance
	// prefix is the key prefix the instances share.
	prefix string
}

// newCluster starts n relay instances over one Redis in front of one fake
// upstream serving accts. Cleanup checks that every slot came back.
func newCluster(t *testing.T, n int, lim *redisstore.LimiterOptions, accts ...*scheduler.Account) *cluster {
	t.Helper()
	opts := redisOptions(t)
	admin := newClient(t)
	p := prefix(t, admin)
	cl := &cluster{t: t, up: newUpstream(t), accts: accts, keys: scheduler.StaticKeys{}, prefix: p,
		subj: relay.Subject{UserID: "u1", APIKeyID: "k1", GroupID: "g", Concurrency: 1}}
	for _, a := range accts {
		a.BaseURL = cl.up.baseURL(a.ID)
		cl.keys[a.ID] = "sk-test-" + a.ID
	}
	for range n {
		cl.nodes = append(cl.nodes, cl.start(opts, p, lim))
	}
	waitSubscribers(t, admin, p, n)
	t.Cleanup(func() {
		for _, in := range cl.nodes {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if err := in.h.Shutdown(ctx); err != nil {
				t.Errorf("turns still running after the test: %v", err)
			}
			cancel()
			if got := in.lim.InFlight("user:" + cl.subj.UserID); got != 0 {
				t.Errorf("user slots held after the test: %d", got)
			}
			for _, a := range accts {
				if got := relaytestenv.AccountInFlight(in.sched, a.ID); got != 0 {
					t.Errorf("account %s slots held after the test: %d", a.ID, got)
				}
			}
		}
		probe := redisstore.NewLimiter(admin, &redisstore.LimiterOptions{Prefix: p})
		defer probe.Close()
		for _, key := range append([]string{"user:" + cl.subj.UserID}, accountKeys(accts)...) {
			if held, queued, err := probe.Count(context.Background(), key); err != nil || held != 0 || queued != 0 {
				t.Errorf("Redis after the test, %s: held=%d queued=%d err=%v", key, held, queued, err)
			}
		}
	})
	return cl
}

func accountKeys(accts []*scheduler.Account) []string {
	var keys []string
	for _, a := range accts {
		keys = append(keys, "account:"+a.ID)
	}
	return keys
}

func (cl *cluster) start(opts *redis.Options, p string, lo *redisstore.LimiterOptions) *instance {
	t := cl.t
	t.Helper()
	in := &instance{client: newClientWith(t, opts)}
	o := redisstore.LimiterOptions{}
	if lo != nil {
		o = *lo
	}
	o.Prefix = p
	in.lim = newLimiter(t, in.client, &o)
	in.events = newEvents(t, in.client, &redisstore.EventsOptions{Prefix: p})
	pool := scheduler.NewStaticPool()
	for _, a := range cl.accts {
		pool.Add("g", a)
	}
	in.sched = &scheduler.Scheduler{
		Pool:           pool,
		Store:          redisstore.NewStore(in.client, &redisstore.StoreOptions{Prefix: p}),
		Limiter:        in.lim,
		OnAccountEvent: in.events.Publish,
	}
	runEvents(t, in.events, in.sched)
	in.h = &relay.Handler{
		Scheduler:     in.sched,
		Limiter:       in.lim,
		Credentials:   cl.keys,
		Conversations: redisstore.NewConversations(in.client, &redisstore.ConversationOptions{Prefix: p}),
		Authenticate: func(r *http.Request) (*relay.Subject, error) {
			s := cl.subj
			if k := r.Header.Get(testKeyHeader); k != "" {
				s.APIKeyID = k
			}
			return &s, nil
		},
	}
	in.srv = httptest.NewServer(in.h)
	t.Cleanup(func() {
		in.srv.Close()
		in.h.CloseIdleConnections()
	})
	return in
}

// holdUpstream returns a channel that holds requests at the fake upstream
// and a func that lets them go; cleanup lets them go too, so a failing test
// does not leave requests that block the servers' Close.
func holdUpstream(t *testing.T) (<-chan struct{}, func()) {
	hold := make(chan struct{})
	release := sync.OnceFunc(func() { close(hold) })
	t.Cleanup(release)
	return hold, release
}

type answer struct {
	status int
	body   string
}

// testKeyHeader names the API key ID a test request authenticates as
// (cluster.subj's when absent).
const testKeyHeader = "X-Test-Api-Key-Id"

func (cl *cluster) post(in *instance, body string) answer { return cl.postAs(in, "", body) }

// postAs posts body as API key ID key ("": cluster.subj's).
func (cl *cluster) postAs(in *instance, key, body string) answer {
	req, err := http.NewRequest(http.MethodPost, in.srv.URL+"/v1/responses", strings.NewReader(body))
	if err != nil {
		cl.t.Error(err)
		return answer{}
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set(testKeyHeader, key)
	}
	resp, err := in.srv.Client().Do(req)
	if err != nil {
		cl.t.Error(err)
		return answer{}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		cl.t.Error(err)
	}
	return answer{resp.StatusCode, string(b)}
}

// TestTwoRelaysShareUserLimit: a concurrency-1 user sending to both
// instances at once never has two turns upstream at the same time.
func TestTwoRelaysShareUserLimit(t *testing.T) {
	cl := newCluster(t, 2, nil,
		&scheduler.Account{ID: "a", Concurrency: 4},
		&scheduler.Account{ID: "b", Concurrency: 4},
		&scheduler.Account{ID: "c", Concurrency: 4})
	hold, letGo := holdUpstream(t)
	for _, a := range cl.accts {
		cl.up.SetDefault(a.ID, relaytest.Step{Hold: hold})
	}
	const perInstance = 4
	var wg sync.WaitGroup
	answers := make(chan answer, 2*perInstance)
	for i := range 2 * perInstance {
		wg.Go(func() { answers <- cl.post(cl.nodes[i%2], `{"model":"gpt-test","input":"hi"}`) })
	}
	// One turn upstream, the rest queued in Redis, from both instances.
	probe := cl.nodes[0].lim
	waitFor(t, 10*time.Second, "one turn upstream and the rest queued", func() bool {
		_, queued := count(t, probe, "user:u1")
		return cl.up.cur.Load() == 1 && queued == 2*perInstance-1 &&
			cl.nodes[0].lim.Waiting("user:u1") > 0 && cl.nodes[1].lim.Waiting("user:u1") > 0
	})
	letGo() // every turn now completes as soon as it is upstream
	wg.Wait()
	close(answers)
	for a := range answers {
		if a.status != http.StatusOK {
			t.Errorf("status %d: %s", a.status, a.body)
		}
	}
	if m := cl.up.max.Load(); m != 1 {
		t.Fatalf("%d turns of the concurrency-1 user were upstream at once", m)
	}
	for _, a := range cl.accts {
		if m := cl.up.MaxInFlight(a.ID); m > 1 {
			t.Fatalf("account %s had %d turns in flight", a.ID, m)
		}
	}
	if n := len(cl.up.Served()); n != 2*perInstance {
		t.Fatalf("upstream served %d turns, want %d", n, 2*perInstance)
	}
}

// TestTwoRelaysShareAccountLimit: an account with concurrency 1 is never
// driven twice at once by the two instances (different users).
func TestTwoRelaysShareAccountLimit(t *testing.T) {
	cl := newCluster(t, 2, nil, &scheduler.Account{ID: "solo", Concurrency: 1})
	cl.subj.Concurrency = 0 // users unlimited: only the account slot limits
	hold, letGo := holdUpstream(t)
	cl.up.SetDefault("solo", relaytest.Step{Hold: hold})
	var wg sync.WaitGroup
	answers := make(chan answer, 6)
	for i := range 6 {
		wg.Go(func() { answers <- cl.post(cl.nodes[i%2], `{"model":"gpt-test","input":"hi"}`) })
	}
	waitFor(t, 10*time.Second, "one turn upstream and the rest waiting for the account", func() bool {
		_, queued := count(t, cl.nodes[0].lim, "account:solo")
		return cl.up.cur.Load() == 1 && queued == 5
	})
	letGo()
	wg.Wait()
	close(answers)
	for a := range answers {
		if a.status != http.StatusOK {
			t.Errorf("status %d: %s", a.status, a.body)
		}
	}
	if m := cl.up.MaxInFlight("solo"); m != 1 {
		t.Fatalf("account had %d turns in flight at once", m)
	}
}

// TestTwoRelaysShareStickiness: a previous_response_id created through one
// instance lands on the same account through the other.
func TestTwoRelaysShareStickiness(t *testing.T) {
	cl := newCluster(t, 2, nil,
		&scheduler.Account{ID: "a"}, &scheduler.Account{ID: "b"}, &scheduler.Account{ID: "c"},
		&scheduler.Account{ID: "d"}, &scheduler.Account{ID: "e"}, &scheduler.Account{ID: "f"})
	r := cl.post(cl.nodes[0], `{"model":"gpt-test","input":"start"}`)
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	prev := gjson.Get(r.body, "id").String()
	for i := range 8 {
		// The fake only knows a response on the account that made it: any
		// other answers 400 previous_response_not_found.
		r = cl.post(cl.nodes[(i+1)%2], `{"model":"gpt-test","input":"more","previous_response_id":"`+prev+`"}`)
		if r.status != http.StatusOK {
			t.Fatalf("turn %d: status %d: %s", i, r.status, r.body)
		}
		prev = gjson.Get(r.body, "id").String()
	}
	reqs := cl.up.Requests()
	for _, q := range reqs[1:] {
		if q.Account != reqs[0].Account {
			t.Fatalf("the chain moved from account %s to %s", reqs[0].Account, q.Account)
		}
	}
}

// TestTwoRelaysShareCooldowns: a 429 seen by one instance benches the
// account on the other too.
func TestTwoRelaysShareCooldowns(t *testing.T) {
	// a is preferred (lower priority value), so the first turn goes there.
	cl := newCluster(t, 2, nil, &scheduler.Account{ID: "a", Priority: 0}, &scheduler.Account{ID: "b", Priority: 1})
	cl.subj.Concurrency = 0
	cl.up.Script("a", relaytest.Step{Status: http.StatusTooManyRequests, Header: http.Header{"Retry-After": {"120"}}})
	one, two := cl.nodes[0], cl.nodes[1]

	r := cl.post(one, `{"model":"gpt-test","input":"hi"}`)
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.body) // failed over to b
	}
	local := relaytestenv.CoolingUntil(one.sched, "a")
	if local.IsZero() {
		t.Fatal("the instance that saw the 429 did not bench the account")
	}
	waitFor(t, 5*time.Second, "the cooldown to reach the other instance", func() bool {
		return !relaytestenv.CoolingUntil(two.sched, "a").IsZero()
	})
	if d := relaytestenv.CoolingUntil(two.sched, "a").Sub(local).Abs(); d > time.Second {
		t.Fatalf("cooldowns differ by %s", d)
	}
	before := len(cl.up.Requests())
	r = cl.post(two, `{"model":"gpt-test","input":"hi"}`)
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	for _, q := range cl.up.Requests()[before:] {
		if q.Account != "b" {
			t.Fatalf("the other instance sent a turn to the benched account %s", q.Account)
		}
	}
}

// TestKilledInstanceFreesSlots: an instance that dies mid-stream (its
// limiter stops refreshing, nothing is released) holds the user's slot at
// most for the lease TTL; the other instance then serves the user.
func TestKilledInstanceFreesSlots(t *testing.T) {
	const ttl = 500 * time.Millisecond
	cl := newCluster(t, 2, &redisstore.LimiterOptions{LeaseTTL: ttl}, &scheduler.Account{ID: "a", Concurrency: 4})
	dead, alive := cl.nodes[0], cl.nodes[1]
	hold, letGo := holdUpstream(t)
	cl.up.Script("a", relaytest.Step{Hold: hold})

	stream := make(chan answer, 1)
	go func() { stream <- cl.post(dead, `{"model":"gpt-test","input":"long","stream":true}`) }()
	waitFor(t, 5*time.Second, "the stream upstream", func() bool { return cl.up.InFlight("a") == 1 })
	dead.lim.Close() // the process "dies": no more refreshes, no releases reach Redis
	died := time.Now()

	r := cl.post(alive, `{"model":"gpt-test","input":"next"}`)
	took := time.Since(died)
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	t.Logf("the other instance served the user %s after the first died (lease TTL %s)", took, ttl)
	if took > ttl+2*time.Second {
		t.Fatalf("took %s, want within the lease TTL %s", took, ttl)
	}
	letGo()
	if a := <-stream; a.status != http.StatusOK {
		t.Fatalf("the first stream: status %d", a.status)
	}
}

// TestRelayWithRedisDown: with Redis unreachable the relay answers 503
// "Concurrency backend unavailable" by default, and serves with FailOpen.
func TestRelayWithRedisDown(t *testing.T) {
	up := newUpstream(t)
	acct := &scheduler.Account{ID: "a", BaseURL: up.baseURL("a"), Concurrency: 2}
	c := unreachableClient(t, testservice.ClosedAddr(t))
	for _, tc := range []struct {
		name        string
		failOpen    bool
		userLimit   int
		wantStatus  int
		wantMessage string
	}{
		{"user slot, fail closed", false, 1, http.StatusServiceUnavailable, "Concurrency backend unavailable, please retry later"},
		{"user slot, fail open", true, 1, http.StatusOK, ""},
		// The relay reports a failed account slot as "No available
		// accounts"; only the status is checked here.
		{"account slot, fail closed", false, 0, http.StatusServiceUnavailable, ""},
		{"account slot, fail open", true, 0, http.StatusOK, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs logBuffer
			lim := newLimiter(t, c, &redisstore.LimiterOptions{FailOpen: tc.failOpen, Logger: logs.logger(), Timeout: time.Second})
			pool := scheduler.NewStaticPool()
			pool.Add("g", acct)
			sched := &scheduler.Scheduler{Pool: pool, Limiter: lim}
			h := &relay.Handler{
				Scheduler:   sched,
				Limiter:     lim,
				Credentials: scheduler.StaticKeys{"a": "sk-test-a"},
				Logger:      logs.logger(),
				Authenticate: func(*http.Request) (*relay.Subject, error) {
					return &relay.Subject{UserID: "u1", GroupID: "g", Concurrency: tc.userLimit}, nil
				},
			}
			srv := httptest.NewServer(h)
			defer func() {
				srv.Close()
				h.CloseIdleConnections()
			}()
			resp, err := srv.Client().Post(srv.URL+"/v1/responses", "application/json", strings.NewReader(`{"model":"gpt-test","input":"hi"}`))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.wantStatus, b)
			}
			if msg := gjson.GetBytes(b, "error.message").String(); tc.wantMessage != "" && msg != tc.wantMessage {
				t.Fatalf("message %q, want %q", msg, tc.wantMessage)
			}
			if !strings.Contains(logs.String(), "Redis unavailable") {
				t.Fatalf("outage not logged:\n%s", logs.String())
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := h.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			if n := lim.InFlight("user:u1") + lim.InFlight("account:a"); n != 0 {
				t.Fatalf("%d local slots left", n)
			}
		})
	}
}
