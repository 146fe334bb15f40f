package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/relaykit/responsesrelay/examples/internal/redistest"
	"github.com/relaykit/responsesrelay/relay/relaytest"
)

// keyView of the key in /debug/keys, read with the admin token.
func (e *env) keyBalance(key string) keyView {
	e.t.Helper()
	resp, b := e.getAdmin("/debug/keys", adminToken)
	if resp.StatusCode != 200 {
		e.t.Fatalf("/debug/keys: %d %s", resp.StatusCode, b)
	}
	var v keysView
	if err := json.Unmarshal(b, &v); err != nil {
		e.t.Fatal(err)
	}
	id := keyID(sha256.Sum256([]byte(key)))
	for _, k := range v.Keys {
		if k.APIKeyID == id {
			return k
		}
	}
	e.t.Fatalf("key %s not in /debug/keys: %s", id, b)
	return keyView{}
}

// holdsAndSpent are a key's holds in flight and spend; both -1 without a
// ledger.
func (k keyView) holdsAndSpent() (holds, spent int64) {
	if k.Holds == nil || k.SpentMicros == nil {
		return -1, -1
	}
	return *k.Holds, *k.SpentMicros
}

// waitSettled waits until no turn of key holds money any more (every
// record settled) and returns the key's spend.
func (e *env) waitSettled(key string) int64 {
	e.t.Helper()
	var spent int64
	waitUntil(e.t, "every hold to end", func() bool {
		var holds int64
		holds, spent = e.keyBalance(key).holdsAndSpent()
		return holds == 0
	})
	return spent
}

// costWant is the cost of a row by the formula, with prices in micro-USD
// per 1M tokens: ((input − cached)·in + cached·cached_in + output·out) /
// 1e6, rounded half up. It is computed here apart from billing.Prices.
func costWant(row usageRow, in, cached, out int64) int64 {
	num := (row.Input-row.Cached)*in + row.Cached*cached + row.Output*out
	return (num + 500_000) / 1_000_000
}

// Each usage row's cost_micros is the formula's for the configured
// prices: the config's entries (an exact name, a pattern without a cached
// price), the file's, the config's over the file's, cached tokens from
// previous_response_id chains, reasoning tokens, streaming and JSON
// turns, and a model without a price at 0.
func TestCostMicrosMatchPrices(t *testing.T) {
	eachDB(t, func(t *testing.T, newDB func(testing.TB) usageDB) {
		db := newDB(t)
		file := writePriceFile(t, `{
			"o3": {"input_cost_per_token": 2e-6, "output_cost_per_token": 8e-6, "cache_read_input_token_cost": 5e-7},
			"gpt-5": {"input_cost_per_token": 1e-3, "output_cost_per_token": 1e-3}}`)
		e := newEnv(t, []string{"a1"}, func(c *Config) {
			c.Usage = UsageConfig{Driver: db.driver, DSN: db.dsn}
			c.Prices = map[string]PriceConfig{
				"gpt-5":  {Input: "0.15", CachedInput: "0.075", Output: "0.6"},
				"gpt-4*": {Input: "2", Output: "8.000001"},
			}
			c.PricesFile = file
		})
		rates := map[string][3]int64{ // in, cached, out; micro-USD per 1M tokens
			"gpt-5":   {150_000, 75_000, 600_000},
			"gpt-4.1": {2_000_000, 2_000_000, 8_000_001},
			"o3":      {2_000_000, 500_000, 8_000_000},
		}
		// turn sends a body and returns the response id.
		turn := func(body string) string {
			t.Helper()
			resp, b := e.post(body, "Authorization", "Bearer "+keyAlice)
			if resp.StatusCode != 200 {
				t.Fatalf("%s: %d %s", body, resp.StatusCode, b)
			}
			if !gjson.GetBytes([]byte(body), "stream").Bool() {
				return gjson.GetBytes(b, "id").String()
			}
			events, err := relaytest.ReadSSE(bytes.NewReader(b))
			if err != nil || len(events) == 0 {
				t.Fatalf("events %v, %v", events, err)
			}
			return gjson.GetBytes(events[len(events)-1].Data, "response.id").String()
		}
		for _, model := range []string{"gpt-5", "gpt-4.1", "o3"} {
			first := turn(`{"model":"` + model + `","input":"one two three","stream":true}`)
			second := turn(`{"model":"` + model + `","input":"and more words","previous_response_id":"` + first + `"}`)
			turn(`{"model":"` + model + `","input":"think","reasoning":{"effort":"low"},"previous_response_id":"` + second + `"}`)
		}
		turn(`{"model":"mystery-1","input":"unpriced"}`)

		rows := e.rows()
		if len(rows) != 10 {
			t.Fatalf("%d rows, want 10", len(rows))
		}
		served := servedByResponse(e.up.Upstream)
		var cached, reasoning, roundedUp int
		for _, row := range rows {
			checkUsage(t, row, served[row.ResponseID].Usage)
			r, priced := rates[row.Model]
			want := costWant(row, r[0], r[1], r[2])
			if !priced {
				want = 0
			}
			if row.CostMicros != want {
				t.Errorf("%s %s: in %d cached %d out %d: cost_micros %d, want %d",
					row.Model, row.RequestID, row.Input, row.Cached, row.Output, row.CostMicros, want)
			}
			if row.Cached > 0 {
				cached++
			}
			if row.Reasoning > 0 {
				reasoning++
			}
			if num := (row.Input-row.Cached)*r[0] + row.Cached*r[1] + row.Output*r[2]; num%1_000_000 >= 500_000 {
				roundedUp++
			}
		}
		if cached != 6 || reasoning != 3 || roundedUp == 0 {
			t.Fatalf("rows with cached tokens %d (want 6), with reasoning %d (want 3), rounded up %d", cached, reasoning, roundedUp)
		}
	})
}

// refuse_unpriced: a model without a price is a 400 before any upstream
// call, and leaves no row.
func TestRefuseUnpriced(t *testing.T) {
	e := newEnv(t, []string{"a1"}, func(c *Config) {
		c.Prices = map[string]PriceConfig{"gpt-5": {Input: "1", Output: "2"}}
		c.RefuseUnpriced = true
	})
	resp, b := e.post(`{"model":"mystery-1","input":"hi"}`, "Authorization", "Bearer "+keyAlice)
	if resp.StatusCode != 400 || gjson.GetBytes(b, "error.code").String() != "model_not_priced" ||
		gjson.GetBytes(b, "error.param").String() != "model" {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	if resp, b := e.post(`{"model":"gpt-5","input":"hi"}`, "Authorization", "Bearer "+keyAlice); resp.StatusCode != 200 {
		t.Fatalf("priced model: %d %s", resp.StatusCode, b)
	}
	if n := len(e.up.Requests()); n != 1 {
		t.Fatalf("upstream got %d requests, want 1", n)
	}
	if rows := e.rows(); len(rows) != 1 {
		t.Fatalf("%d rows, want 1", len(rows))
	}
}

// answer is one client's outcome.
type answer struct {
	input     string
	status    int
	body      []byte
	remaining string // X-Relay-Budget-Remaining-Micros
}

// concurrentBudget sends 50 turns of key at once, spread over envs (relayd
// instances sharing one ledger), whose budget covers 5 of their holds: the
// upstream holds the admitted ones until every other is answered, so that
// exactly 5 are admitted. Every refusal is 429 insufficient_quota and
// never reaches the upstream; the answers carry what the budget has left;
// the settled spend stays within the budget and equals the rows' costs.
func concurrentBudget(t *testing.T, up *relaytest.Server, envs []*env, key string, budget, hold int64) {
	const turns, admitted = 50, 5
	gate := make(chan struct{})
	up.SetDefault("a1", relaytest.Step{Hold: gate})
	answers := make(chan answer, turns)
	for i := range turns {
		e := envs[i%len(envs)]
		input := fmt.Sprintf("turn %02d", i)
		go func() {
			req, _ := http.NewRequest(http.MethodPost, e.ts.URL+"/v1/responses",
				strings.NewReader(`{"model":"gpt-5","input":"`+input+`","max_output_tokens":16}`))
			req.Header.Set("Authorization", "Bearer "+key)
			resp, err := e.ts.Client().Do(req)
			if err != nil {
				answers <- answer{input: input, body: []byte(err.Error())}
				return
			}
			defer resp.Body.Close()
			var b bytes.Buffer
			b.ReadFrom(resp.Body)
			answers <- answer{input, resp.StatusCode, b.Bytes(), resp.Header.Get("X-Relay-Budget-Remaining-Micros")}
		}()
	}
	// The refusals come at once; the admitted wait at the upstream. A
	// sixth turn admitted would wait there too, and the refusals would
	// never all come.
	timeout := time.NewTimer(20 * time.Second)
	defer timeout.Stop()
	next := func() answer {
		select {
		case a := <-answers:
			return a
		case <-timeout.C:
			t.Fatalf("timed out waiting for the answers; the upstream has %d turns", up.InFlight("a1"))
			return answer{}
		}
	}
	var refused, ok []answer
	for range turns - admitted {
		a := next()
		if a.status != http.StatusTooManyRequests {
			t.Fatalf("%s answered %d before the upstream was let go: %s", a.input, a.status, a.body)
		}
		refused = append(refused, a)
	}
	wctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := up.Wait(wctx, func() bool { return up.InFlight("a1") == admitted }); err != nil {
		t.Fatal(err)
	}
	close(gate)
	for range admitted {
		ok = append(ok, next())
	}
	for _, a := range refused {
		if gjson.GetBytes(a.body, "error.code").String() != "insufficient_quota" ||
			gjson.GetBytes(a.body, "error.type").String() != "insufficient_quota" {
			t.Fatalf("%s refused with %s", a.input, a.body)
		}
	}
	// What is left after each admitted hold: budget − k·hold, k = 1..5.
	lefts := map[string]bool{}
	inputs := map[string]bool{}
	for _, a := range ok {
		if a.status != 200 {
			t.Fatalf("%s: %d %s", a.input, a.status, a.body)
		}
		lefts[a.remaining] = true
		inputs[a.input] = true
	}
	for k := int64(1); k <= admitted; k++ {
		if want := strconv.FormatInt(budget-k*hold, 10); !lefts[want] {
			t.Errorf("no answer says %s micro-USD left; answers say %v", want, lefts)
		}
	}
	// The upstream saw the admitted turns and no other.
	reqs := up.Requests()
	if len(reqs) != admitted {
		t.Fatalf("the upstream got %d requests, want %d", len(reqs), admitted)
	}
	for _, r := range reqs {
		if in := gjson.GetBytes(r.Body, "input").String(); !inputs[in] {
			t.Fatalf("the upstream got %q, which was refused", in)
		}
	}

	spent := envs[0].waitSettled(key)
	var sum int64
	dsns := map[string]bool{}
	for _, e := range envs {
		e.finish()
		if dsns[e.db.dsn] {
			continue
		}
		dsns[e.db.dsn] = true
		for _, row := range e.db.rows(t) {
			sum += row.CostMicros
		}
	}
	if spent != sum || spent <= 0 || spent > budget {
		t.Fatalf("spent %d, rows cost %d, budget %d", spent, sum, budget)
	}
	t.Logf("budget %d micro-USD, hold %d: %d admitted, %d refused; spent %d", budget, hold, len(ok), len(refused), spent)
}

// budgetConfig gives key a budget covering 5 holds of concurrentBudget's
// turns, priced $1 input and $10 output per 1M tokens: a hold is the
// body's bytes / 3 (rounded up) of input and max_output_tokens (16) of
// output, as the relay estimates it. It returns the budget and the hold.
func budgetConfig(c *Config, key, user string) (budget, hold int64) {
	body := `{"model":"gpt-5","input":"turn 00","max_output_tokens":16}`
	hold = (int64(len(body))+2)/3*1 + 16*10
	budget = 5*hold + hold/2
	c.AdminToken = adminToken
	c.Prices = map[string]PriceConfig{"gpt-5": {Input: "1", Output: "10"}}
	c.APIKeys[1] = APIKeyConfig{Key: key, UserID: user,
		Budget: &BudgetConfig{USD: Decimal(fmt.Sprintf("0.%06d", budget))}}
	return budget, hold
}

// No overspend: 50 concurrent turns against a budget that covers 5, on
// one relayd with the SQLite ledger, on two sharing a PostgreSQL database,
// and on two sharing Redis.
func TestBudgetNoOverspend(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		key := "rk-test-budget-" + randomHex(8)
		var budget, hold int64
		e := newEnv(t, []string{"a1"}, func(c *Config) { budget, hold = budgetConfig(c, key, "carol") })
		if e.srv.ledgerKind != ledgerSQLite {
			t.Fatalf("ledger %q", e.srv.ledgerKind)
		}
		concurrentBudget(t, e.up, []*env{e}, key, budget, hold)
	})
	t.Run("postgres", func(t *testing.T) {
		db := postgresDB(t)
		key := "rk-test-budget-" + randomHex(8)
		var budget, hold int64
		tweak := func(c *Config) {
			budget, hold = budgetConfig(c, key, "carol")
			c.Usage = UsageConfig{Driver: db.driver, DSN: db.dsn}
		}
		up := relaytest.NewServer()
		a, b := newEnvOn(t, up, []string{"a1"}, tweak), newEnvOn(t, up, []string{"a1"}, tweak)
		if a.srv.ledgerKind != ledgerPostgres {
			t.Fatalf("ledger %q", a.srv.ledgerKind)
		}
		concurrentBudget(t, up, []*env{a, b}, key, budget, hold)
	})
	t.Run("redis", func(t *testing.T) {
		url := redistest.URL(t)
		// Redis outlives the test: a key and user of their own.
		key, user := "rk-test-budget-"+randomHex(8), "carol-"+randomHex(4)
		var budget, hold int64
		tweak := func(c *Config) {
			budget, hold = budgetConfig(c, key, user)
			c.Redis = url
			c.APIKeys[0].UserID += "-" + randomHex(4)
		}
		up := relaytest.NewServer()
		a, b := newEnvOn(t, up, []string{"a1"}, tweak), newEnvOn(t, up, []string{"a1"}, tweak)
		if a.srv.ledgerKind != ledgerRedis {
			t.Fatalf("ledger %q", a.srv.ledgerKind)
		}
		concurrentBudget(t, up, []*env{a, b}, key, budget, hold)
	})
}

// RPM: the turn past the key's requests per minute is 429
// rate_limit_exceeded with Retry-After before any upstream call; the
// answers before it say how many are left. A TPM below a turn's estimate
// refuses it the same way, of type "tokens".
func TestRateLimits(t *testing.T) {
	keys := []string{"rk-test-rpm-0-" + randomHex(6), "rk-test-rpm-1-" + randomHex(6), "rk-test-rpm-2-" + randomHex(6)}
	const tpmKey = "rk-test-tpm-5f0e1d2c3b4a"
	e := newEnv(t, []string{"a1"}, func(c *Config) {
		c.APIKeys = nil
		for i, k := range keys {
			c.APIKeys = append(c.APIKeys, APIKeyConfig{Key: k, UserID: fmt.Sprintf("rpm-%d", i), RPM: 2})
		}
		c.APIKeys = append(c.APIKeys, APIKeyConfig{Key: tpmKey, UserID: "tpm", TPM: 5})
	})
	// A key per attempt: an attempt whose three turns straddle a minute
	// is started again with a fresh key and minute.
	for attempt, key := range keys {
		minute := func() int64 { return time.Now().Unix() / 60 }
		start := minute()
		var got []*http.Response
		var bodies [][]byte
		for range 3 {
			resp, b := e.post(`{"model":"gpt-5","input":"hi"}`, "Authorization", "Bearer "+key)
			got, bodies = append(got, resp), append(bodies, b)
		}
		if minute() != start && attempt < len(keys)-1 {
			continue
		}
		for i, left := range []string{"1", "0"} {
			if got[i].StatusCode != 200 || got[i].Header.Get("X-Ratelimit-Remaining-Requests") != left {
				t.Fatalf("turn %d: %d, %q left: %s", i, got[i].StatusCode, got[i].Header.Get("X-Ratelimit-Remaining-Requests"), bodies[i])
			}
		}
		ra, _ := strconv.Atoi(got[2].Header.Get("Retry-After"))
		if got[2].StatusCode != 429 || gjson.GetBytes(bodies[2], "error.code").String() != "rate_limit_exceeded" ||
			gjson.GetBytes(bodies[2], "error.type").String() != "requests" || ra < 1 || ra > 60 {
			t.Fatalf("third turn: %d Retry-After %q: %s", got[2].StatusCode, got[2].Header.Get("Retry-After"), bodies[2])
		}
		break
	}
	resp, b := e.post(`{"model":"gpt-5","input":"hi"}`, "Authorization", "Bearer "+tpmKey)
	if resp.StatusCode != 429 || gjson.GetBytes(b, "error.code").String() != "rate_limit_exceeded" ||
		gjson.GetBytes(b, "error.type").String() != "tokens" || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("over the TPM: %d %s", resp.StatusCode, b)
	}
	if n := len(e.up.Requests()); n != 2 {
		t.Fatalf("the upstream got %d requests, want the 2 admitted", n)
	}
}

// Holds end after each fault: a client gone mid-stream (its drained
// record settles), a client gone while queued for an account and a model
// no account serves (both released), every account answering 429 (a
// record of cost 0 settles): no hold is left, and the spend is the rows'
// cost.
func TestHoldsEndAfterFaults(t *testing.T) {
	key := "rk-test-faults-" + randomHex(8)
	e := newEnv(t, []string{"a1"}, func(c *Config) {
		budgetConfig(c, key, "carol")
		c.APIKeys[1].Budget.USD = "10"
		c.Accounts[0].Concurrency = 1
		c.Accounts[0].Models = []string{"gpt-*"}
	})
	send := func(ctx context.Context, body string) (*http.Response, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.ts.URL+"/v1/responses", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		return e.ts.Client().Do(req)
	}
	holds := func() int64 { h, _ := e.keyBalance(key).holdsAndSpent(); return h }

	// Mid-stream: the client reads six events and leaves.
	resume := make(chan struct{})
	e.up.Script("a1", relaytest.Step{After: 6, Hold: resume})
	ctx, cancel := context.WithCancel(t.Context())
	resp, err := send(ctx, `{"model":"gpt-5","input":"leave mid-stream","stream":true}`)
	if err != nil {
		t.Fatal(err)
	}
	readEvents(t, bufio.NewReader(resp.Body), 6)
	cancel()
	resp.Body.Close()
	waitUntil(t, "relayd to see the client leave", func() bool { return e.gone.Load() == 1 })
	close(resume)
	// The drained turn must end (its record settled, its slot back)
	// before the next part: else the queued turn below could take the
	// slot it frees ahead of the turn meant to hold it.
	waitUntil(t, "the drained turn's settlement", func() bool { return holds() == 0 && e.up.InFlight("a1") == 0 })

	// Queued for the account's one slot, which a held turn takes.
	busy := make(chan struct{})
	e.up.Script("a1", relaytest.Step{Hold: busy})
	first := make(chan error, 1)
	go func() {
		resp, err := send(t.Context(), `{"model":"gpt-5","input":"takes the slot"}`)
		if err == nil {
			resp.Body.Close()
		}
		first <- err
	}()
	wctx, wcancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer wcancel()
	if err := e.up.Wait(wctx, func() bool { return e.up.InFlight("a1") == 1 }); err != nil {
		t.Fatal(err)
	}
	if h := holds(); h != 1 {
		t.Fatalf("%d holds with one turn upstream", h)
	}
	qctx, qcancel := context.WithCancel(t.Context())
	queued := make(chan error, 1)
	go func() {
		_, err := send(qctx, `{"model":"gpt-5","input":"queued"}`)
		queued <- err
	}()
	waitUntil(t, "the queued turn's hold", func() bool { return holds() == 2 })
	qcancel()
	<-queued
	waitUntil(t, "the queued turn's release", func() bool { return holds() == 1 })
	close(busy)
	if err := <-first; err != nil {
		t.Fatal(err)
	}

	// No account serves the model.
	if resp, err := send(t.Context(), `{"model":"o3","input":"nobody"}`); err != nil || resp.StatusCode == 200 {
		t.Fatalf("unserved model: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	// Every account refuses (last: the account then cools down).
	e.up.Script("a1", relaytest.Step{Status: 429})
	if resp, err := send(t.Context(), `{"model":"gpt-5","input":"all refuse"}`); err != nil || resp.StatusCode != 429 {
		t.Fatalf("all accounts 429: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	spent := e.waitSettled(key)
	var sum int64
	statuses := map[string]int{}
	for _, row := range e.rows() {
		sum += row.CostMicros
		statuses[row.Status]++
	}
	if spent != sum || spent == 0 {
		t.Fatalf("spent %d, rows cost %d", spent, sum)
	}
	if statuses["client_gone"] != 1 || statuses["upstream_error"] != 1 || statuses["completed"] != 1 || len(statuses) != 3 {
		t.Fatalf("rows by status %v", statuses)
	}
}
