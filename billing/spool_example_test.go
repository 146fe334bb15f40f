package billing_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/relaykit/responsesrelay/billing"
)

// Put a durable spool in front of the host's sink: a record is on disk
// before Record returns, and one an earlier run did not deliver is
// delivered when the spool is opened again.
func ExampleOpenSpool() {
	dir, err := os.MkdirTemp("", "usage-spool")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)

	var db billing.MemorySink // stands in for the host's SQL sink, idempotent by RequestID
	usage, err := billing.OpenSpool(dir, &db, billing.DeliveryOptions{})
	if err != nil {
		panic(err)
	}
	for i := range 3 {
		_ = usage.Record(context.Background(), billing.Usage{
			RequestID: fmt.Sprintf("req_%d", i), UserID: "u1", Model: "gpt-5",
			InputTokens: 1200, OutputTokens: 300, TotalTokens: 1500, Status: billing.StatusCompleted,
		})
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := usage.Close(ctx); err != nil {
		fmt.Println("close:", err) // the undelivered records stay in dir
	}
	fmt.Println("stored:", len(db.Records()), "pending:", usage.Pending())
	// Output:
	// stored: 3 pending: 0
}
