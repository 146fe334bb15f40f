package leakcheck_test

import (
	"fmt"
	"time"

	"github.com/relaykit/responsesrelay/internal/leakcheck"
)

// A goroutine started after the snapshot is reported until it exits.
func Example() {
	base := leakcheck.Snapshot()

	stop := make(chan struct{})
	go func() { <-stop }()
	fmt.Println("while blocked:", len(leakcheck.Leaked(base, 0)))

	close(stop)
	fmt.Println("after stop:", len(leakcheck.Leaked(base, time.Second)))
	// Output:
	// while blocked: 1
	// after stop: 0
}
