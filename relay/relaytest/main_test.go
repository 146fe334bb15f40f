package relaytest_test

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestMain fails the run when a server or client goroutine outlives the
// tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaks := waitNoLeaks(5 * time.Second); len(leaks) > 0 {
			fmt.Fprintf(os.Stderr, "leaked goroutines:\n\n%s\n", strings.Join(leaks, "\n\n"))
			code = 1
		}
	}
	os.Exit(code)
}

// leakedGoroutines lists goroutines running server or client code (HTTP or
// WebSocket), other than the caller.
func leakedGoroutines() []string {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for i, g := range strings.Split(string(buf), "\n\n") {
		if i == 0 { // the calling goroutine
			continue
		}
		if strings.Contains(g, "net/http.") || strings.Contains(g, "relaytest.(") || strings.Contains(g, "coder/websocket.") {
			out = append(out, g)
		}
	}
	return out
}

// waitNoLeaks polls, because goroutines of closed connections take a moment
// to notice; it returns what is still running after d.
func waitNoLeaks(d time.Duration) []string {
	deadline := time.Now().Add(d)
	for {
		leaks := leakedGoroutines()
		if len(leaks) == 0 || time.Now().After(deadline) {
			return leaks
		}
		time.Sleep(10 * time.Millisecond)
	}
}
