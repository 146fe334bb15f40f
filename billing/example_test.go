package billing_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/relaykit/responsesrelay/billing"
)

// Wrap the host's sink so that a slow or failing database never delays a
// turn, and drain it on shutdown.
func ExampleNewAsync() {
	var db billing.MemorySink // stands in for the host's SQL sink
	usage := billing.NewAsync(&db, billing.DeliveryOptions{
		OnDropped: func(u billing.Usage, err error) {
			// Last resort: the record is also in the error log as JSON.
			fmt.Println("dropped", u.RequestID, err)
		},
	})

	for i := range 3 {
		_ = usage.Record(context.Background(), billing.Usage{
			RequestID: fmt.Sprintf("req_%d", i), UserID: "u1", Model: "gpt-5",
			InputTokens: 1200, OutputTokens: 300, TotalTokens: 1500, Status: billing.StatusCompleted,
		})
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := usage.Close(ctx); err != nil {
		fmt.Println("close:", err)
	}
	fmt.Println("stored:", len(db.Records()))
	// Output:
	// stored: 3
}

// A record that still fails after the retries reaches OnDropped and an
// error log line holding the whole record.
func ExampleDeliveryOptions_onDropped() {
	down := billing.SinkFunc(func(context.Context, billing.Usage) error {
		return errors.New("connection refused")
	})
	usage := billing.NewAsync(down, billing.DeliveryOptions{
		MaxRetries: 2,
		RetryBase:  time.Millisecond,
		Logger:     slog.New(slog.DiscardHandler), // keep the example's output short
		OnDropped: func(u billing.Usage, err error) {
			fmt.Println("dropped", u.RequestID+":", err)
		},
	})
	_ = usage.Record(context.Background(), billing.Usage{RequestID: "req_1"})
	_ = usage.Close(context.Background())
	// Output:
	// dropped req_1: connection refused
}

// A Gate refuses a turn with a *Denial, which decides what the client sees.
func ExampleDenial() {
	gate := billing.GateFunc(func(ctx context.Context, q billing.Request) error {
		if q.UserID == "u-broke" {
			return &billing.Denial{Message: "Your balance is exhausted, please top up", RetryAfter: 90 * time.Second}
		}
		return nil
	})

	err := gate.Check(context.Background(), billing.Request{UserID: "u-broke", Model: "gpt-5"})
	var d *billing.Denial
	if errors.As(err, &d) {
		fmt.Println(d.Message, d.RetryAfter)
	}
	// Output:
	// Your balance is exhausted, please top up 1m30s
}
