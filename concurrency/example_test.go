package concurrency_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/relaykit/responsesrelay/concurrency"
)

// A user limited to one turn at a time: a second turn waits in the queue
// and runs when the first releases its slot.
func Example() {
	ctx := context.Background()
	limiter := concurrency.NewMemory()
	wait := concurrency.WaitOptions{MaxWaiters: 1, Timeout: 30 * time.Second}

	first, err := concurrency.Acquire(ctx, limiter, "user:42", 1, wait)
	if err != nil {
		panic(err)
	}

	granted := make(chan func())
	go func() {
		second, err := concurrency.Acquire(ctx, limiter, "user:42", 1, wait)
		if err != nil {
			panic(err)
		}
		granted <- second
	}()
	for limiter.Waiting("user:42") == 0 {
		time.Sleep(time.Millisecond) // let the second turn join the queue
	}

	// The queue holds one waiter, so a third turn is turned away at once.
	_, err = concurrency.Acquire(ctx, limiter, "user:42", 1, wait)
	fmt.Println("third:", errors.Is(err, concurrency.ErrQueueFull))

	first() // the slot passes straight to the waiter
	second := <-granted
	fmt.Println("in flight:", limiter.InFlight("user:42"))

	second()
	second() // releasing twice is harmless
	fmt.Println("after release:", limiter.InFlight("user:42"))
	// Output:
	// third: true
	// in flight: 1
	// after release: 0
}

// TryAcquire never waits; a full key is simply refused.
func ExampleMemory_TryAcquire() {
	ctx := context.Background()
	var limiter concurrency.Memory // the zero value is ready to use

	release, ok, _ := limiter.TryAcquire(ctx, "account:a", 1)
	fmt.Println("first:", ok)
	_, ok, _ = limiter.TryAcquire(ctx, "account:a", 1)
	fmt.Println("second:", ok)
	release()
	_, ok, _ = limiter.TryAcquire(ctx, "account:a", 0) // limit <= 0: unlimited
	fmt.Println("unlimited:", ok)
	// Output:
	// first: true
	// second: false
	// unlimited: true
}
