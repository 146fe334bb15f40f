package relaymetrics_test

import (
	"context"
	"fmt"
	"github.com/tidwall/gjson"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/relaykit/responsesrelay/examples/internal/relayenv"
	"github.com/relaykit/responsesrelay/examples/relaymetrics"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/relaykit/responsesrelay/scheduler"
)

// Metrics of a turn served at once, as the relay reports them.

func TestServedStream(t *testing.T) {
	e := newEnv(t, relaymetrics.Options{}, &scheduler.Account{ID: "a", Concurrency: 8})
	if code, body := e.do(streamReq); code != 200 || !strings.Contains(body, "response.completed") {
		t.Fatalf("relay answered %d: %s", code, body)
	}
	usage := e.Up.Served()[0].Usage

	if err := testutil.GatherAndCompare(e.reg, strings.NewReader(`
# HELP responsesrelay_turns_total Turns that ended, by usage status (or error, client_gone) and the class of the HTTP status answered.
# TYPE responsesrelay_turns_total counter
responsesrelay_turns_total{code_class="2xx",model="gpt-test",status="completed",transport="http"} 1
`), "responsesrelay_turns_total"); err != nil {
		t.Error(err)
	}
	e.want(1, "turns_started_total", "transport", "http")
	e.want(0, "turns_in_flight")
	e.want(1, "turn_duration_seconds", "transport", "http", "status", "completed")
	e.want(1, "attempts_total", "account", "a", "outcome", "served", "reason", "")
	e.want(1, "attempt_duration_seconds", "account", "a", "outcome", "served")
	e.want(0, "failovers_total")
	e.want(1, "time_to_first_token_seconds", "account", "a", "model", "gpt-test")
	e.want(float64(usage.Input), "tokens_total", "model", "gpt-test", "kind", "input")
	e.want(float64(usage.Output), "tokens_total", "model", "gpt-test", "kind", "output")
	e.want(1, "slot_wait_seconds", "kind", "user", "outcome", "acquired")
	e.want(1, "slot_wait_seconds", "kind", "account", "outcome", "acquired")
	e.want(0, "account_events_total")
	if usage.Input == 0 || usage.Output == 0 {
		t.Errorf("the fake reported no tokens: %+v", usage)
	}
}

// A 429 on the preferred account, then the other serves: one failover.
func TestFailover(t *testing.T) {
	e := newEnv(t, relaymetrics.Options{},
		&scheduler.Account{ID: "a", Concurrency: 8, Priority: 0},
		&scheduler.Account{ID: "b", Concurrency: 8, Priority: 1})
	e.Up.Script("a", relaytest.Step{Status: http.StatusTooManyRequests})
	if code, body := e.do(streamReq); code != 200 || !strings.Contains(body, "response.completed") {
		t.Fatalf("relay answered %d: %s", code, body)
	}

	e.want(1, "failovers_total", "account", "a", "reason", "status")
	e.want(1, "failovers_total")
	e.want(1, "attempts_total", "account", "a", "outcome", "failover", "reason", "status")
	e.want(1, "attempts_total", "account", "b", "outcome", "served")
	e.want(2, "attempts_total")
	e.want(1, "account_events_total", "account", "a", "kind", scheduler.EventRateLimited)
	e.want(1, "turns_total", "status", "completed", "code_class", "2xx")
	e.want(1, "time_to_first_token_seconds", "account", "b")
	e.want(0, "time_to_first_token_seconds", "account", "a")
	// The scheduler's view: a cools down for the rate limit, b does not.
	e.want(1, "account_cooling", "account", "a", "reason", scheduler.EventRateLimited)
	e.want(0, "account_cooling", "account", "b")
	if left, _ := value(t, e.reg, "account_cooldown_remaining_seconds", "account", "a"); left <= 0 {
		t.Errorf("account a has %v s of cooldown left, want > 0", left)
	}
}

// A client that leaves mid-stream ends its turn as client_gone.
func TestClientGone(t *testing.T) {
	e := newEnv(t, relaymetrics.Options{}, &scheduler.Account{ID: "a", Concurrency: 8})
	e.H.DrainTimeout = 250 * time.Millisecond
	e.LeaveMidStream("a", streamReq, func() {
		e.want(1, "turns_in_flight")
		e.want(0, "turns_total")
	})

	e.want(1, "turns_total", "status", "client_gone")
	e.want(1, "turns_total")
	e.want(1, "attempts_total", "account", "a", "outcome", "client_gone")
	e.want(1, "time_to_first_token_seconds", "account", "a")
	e.want(0, "turns_in_flight")
}

// Model names beyond MaxModels share the label value "other".
func TestMaxModels(t *testing.T) {
	e := newEnv(t, relaymetrics.Options{MaxModels: 2}, &scheduler.Account{ID: "a", Concurrency: 8})
	for _, model := range []string{"m1", "m2", "m3", "m1", "m4"} {
		if code, body := e.do(fmt.Sprintf(`{"model":%q,"input":"hi"}`, model)); code != 200 {
			t.Fatalf("%s: relay answered %d: %s", model, code, body)
		}
	}
	e.want(2, "turns_total", "model", "m1")
	e.want(1, "turns_total", "model", "m2")
	e.want(2, "turns_total", "model", relaymetrics.OtherModel)
	e.want(0, "turns_total", "model", "m3")
	e.want(0, "turns_total", "model", "m4")
	e.want(2, "time_to_first_token_seconds", "model", relaymetrics.OtherModel)
	if n, _ := value(t, e.reg, "tokens_total", "model", relaymetrics.OtherModel, "kind", "input"); n == 0 {
		t.Error("no input tokens counted for model other")
	}
	// A request rejected before its model was read.
	if code, _ := e.do(`not json`); code != 400 {
		t.Fatalf("relay answered %d to a bad body", code)
	}
	e.want(1, "turns_total", "model", relaymetrics.NoModel, "status", "error", "code_class", "4xx")
}

// The scheduler's gauges follow a turn held at the upstream.
func TestSchedulerGauges(t *testing.T) {
	e := newEnv(t, relaymetrics.Options{}, &scheduler.Account{ID: "a", Concurrency: 3})
	hold := make(chan struct{})
	e.Up.Script("a", relaytest.Step{Hold: hold})
	done := make(chan int, 1)
	go func() {
		resp, err := e.Srv.Client().Do(e.Request(context.Background(), streamReq, relayenv.ClientKey))
		if err != nil {
			done <- 0
			return
		}
		io.Copy(io.Discard, resp.Body) // a client that stops reading would leave
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Up.Wait(ctx, func() bool { return e.Up.InFlight("a") == 1 }); err != nil {
		t.Fatal(err)
	}

	e.want(1, "account_in_flight", "account", "a")
	e.want(3, "account_limit", "account", "a")
	e.want(0, "account_cooling", "account", "a", "reason", "")
	e.want(0, "account_error_rate", "account", "a")
	e.want(1, "turns_in_flight")
	e.want(0, "turns_total")

	close(hold)
	if code := <-done; code != 200 {
		t.Fatalf("relay answered %d", code)
	}
	e.Wait()
	e.want(0, "account_in_flight", "account", "a")
	e.want(0, "turns_in_flight")
	e.want(1, "turns_total", "status", "completed")
	if ttft, _ := value(t, e.reg, "account_ttft_seconds", "account", "a"); ttft <= 0 {
		t.Errorf("account_ttft_seconds = %v after a served turn, want > 0", ttft)
	}
}

// A previous_response_id chain whose account cools down is rebuilt on the
// other account; a stateless history moved there loses the reasoning item
// the first account encrypted. Both are counted for the serving account.
func TestConversationMoves(t *testing.T) {
	e := newEnv(t, relaymetrics.Options{},
		&scheduler.Account{ID: "a", Concurrency: 8, Priority: 0},
		&scheduler.Account{ID: "b", Concurrency: 8, Priority: 1})
	code, body := e.do(`{"model":"gpt-test","include":["reasoning.encrypted_content"],"input":"one"}`)
	if code != 200 {
		t.Fatalf("relay answered %d: %s", code, body)
	}
	prev := gjson.Get(body, "id").Str
	reasoning := gjson.Get(body, `output.#(type=="reasoning")`).Raw
	e.Up.Script("a", relaytest.Step{Status: http.StatusTooManyRequests, Header: http.Header{"Retry-After": {"60"}}})
	if code, body := e.do(`{"model":"gpt-test","input":"two","previous_response_id":"` + prev + `"}`); code != 200 {
		t.Fatalf("moved chain: %d: %s", code, body)
	}
	e.want(1, "context_rebuilds_total", "account", "b")
	e.want(1, "encrypted_items_removed_total", "account", "b")
	if code, body := e.do(`{"model":"gpt-test","store":false,"input":[` + reasoning + `,{"type":"message","role":"user","content":"three"}]}`); code != 200 {
		t.Fatalf("moved history: %d: %s", code, body)
	}
	e.want(1, "context_rebuilds_total", "account", "b")
	e.want(2, "encrypted_items_removed_total", "account", "b")
}
