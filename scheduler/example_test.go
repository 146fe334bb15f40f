package scheduler_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/relaykit/responsesrelay/scheduler"
)

func Example() {
	ctx := context.Background()
	pool := scheduler.NewStaticPool()
	pool.Set("default", []*scheduler.Account{
		{ID: "primary", BaseURL: "https://api.openai.com/v1", Concurrency: 4},
		{ID: "backup", BaseURL: "https://api.openai.com/v1", Concurrency: 4, Priority: 1},
	})
	s := &scheduler.Scheduler{
		Pool: pool,
		OnAccountEvent: func(_ context.Context, e scheduler.AccountEvent) {
			fmt.Println("event:", e.AccountID, e.Kind, e.Status)
		},
	}
	q := scheduler.Request{Group: "default", Model: "gpt-5", APIKeyID: "key-1", SessionKey: "conversation-42"}

	// A turn: select, serve, observe, bind, release.
	sel, err := s.Select(ctx, q)
	if err != nil {
		panic(err)
	}
	fmt.Println(sel.Account.ID, sel.Layer)
	s.Observe(sel.Account.ID, scheduler.Outcome{Kind: scheduler.OutcomeSuccess, TTFT: 800 * time.Millisecond})
	_ = s.Bind(ctx, q, sel.Account.ID, "resp_1")
	sel.Release()

	// The next turn of the conversation stays on the same account.
	sel, _ = s.Select(ctx, q)
	fmt.Println(sel.Account.ID, sel.Layer)
	sel.Release()

	// A 429 benches the account for its Retry-After; the session moves.
	s.Observe("primary", scheduler.Outcome{
		Kind:   scheduler.OutcomeStatus,
		Status: http.StatusTooManyRequests,
		Header: http.Header{"Retry-After": {"30"}},
	})
	sel, _ = s.Select(ctx, q)
	fmt.Println(sel.Account.ID, sel.Layer)
	sel.Release()

	// With the backup excluded (it failed this turn), nothing is left.
	q.Exclude = []string{"backup"}
	_, err = s.Select(ctx, q)
	var na *scheduler.NoAccountError
	if errors.As(err, &na) {
		fmt.Println("no account:", na.Reason)
	}
	// Output:
	// primary balanced
	// primary session
	// event: primary rate_limited 429
	// backup balanced
	// no account: cooling_down
}

// Snapshot is the operator's view: here an account benched by a 429 with a
// reset header, next to a healthy one.
func ExampleScheduler_Snapshot() {
	pool := scheduler.NewStaticPool()
	pool.Add("default", &scheduler.Account{ID: "a1", Concurrency: 4})
	pool.Add("default", &scheduler.Account{ID: "a2", Concurrency: 8})
	s := &scheduler.Scheduler{Pool: pool}

	s.Observe("a1", scheduler.Outcome{Kind: scheduler.OutcomeStatus, Status: 429,
		Header: http.Header{"Retry-After": {"30"}}})
	s.Observe("a2", scheduler.Outcome{Kind: scheduler.OutcomeSuccess, TTFT: 400 * time.Millisecond})

	states, err := s.SnapshotGroup(context.Background(), "default")
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, a := range states {
		fmt.Printf("%s: limit %d, in flight %d, last %d %s, cooling %v %s, ttft %s\n",
			a.ID, a.Limit, a.InFlight, a.LastStatus, a.LastOutcome, !a.CoolingUntil.IsZero(), a.CoolingReason, a.TTFT)
	}
	// Output:
	// a1: limit 4, in flight 0, last 429 status, cooling true rate_limited, ttft 0s
	// a2: limit 8, in flight 0, last 200 success, cooling false , ttft 400ms
}
