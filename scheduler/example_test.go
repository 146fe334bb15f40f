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
