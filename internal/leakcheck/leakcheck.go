// Package leakcheck finds goroutines that a test started and left running.
//
// Every package's tests check the whole binary from TestMain:
//
//	func TestMain(m *testing.M) { leakcheck.Main(m) }
//
// and a single test can check itself against a snapshot taken when it
// started:
//
//	func TestStream(t *testing.T) {
//		leakcheck.Check(t) // verified when the test and its later cleanups finish
//		...
//	}
//
// or, when the point of the check matters:
//
//	base := leakcheck.Snapshot()
//	...
//	leakcheck.VerifyNone(t, base)
//
// Goroutines exit asynchronously, so every check retries for up to five
// seconds before it reports the stacks that are still there.
//
// Goroutines of the runtime, the testing package and os/signal are ignored.
// Those of net/http are not: a keep-alive connection left in a Transport's
// idle pool keeps a read and a write goroutine alive, so a test that makes
// requests must call CloseIdleConnections on its client or transport (and
// Close its httptest.Server) before it ends.
//
// Per-test checks see every goroutine of the process, so they do not suit
// tests that run in parallel with others (t.Parallel) in the same binary:
// the goroutines of a sibling test would be reported too. Main has no such
// limit, since it runs after all tests.
package leakcheck

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// DefaultWait is how long Main, Check and VerifyNone wait for goroutines
// to exit before reporting them.
const DefaultWait = 5 * time.Second

// patience is DefaultWait, shortened by this package's own tests.
var patience = DefaultWait

// Baseline is the set of goroutines alive at a moment; later checks report
// only goroutines that are not in it. The zero Baseline is empty.
type Baseline struct {
	ids map[uint64]struct{}
}

// Snapshot records the goroutines alive now.
func Snapshot() Baseline {
	gs := goroutines()
	b := Baseline{ids: make(map[uint64]struct{}, len(gs))}
	for _, g := range gs {
		b.ids[g.id] = struct{}{}
	}
	return b
}

// Leaked returns the stacks of the goroutines that were not in base and are
// still running, ignoring the caller's own goroutine and the benign ones
// described in the package documentation. It retries until none is left or
// wait has passed; wait <= 0 looks once.
func Leaked(base Baseline, wait time.Duration) []string {
	var leaked []string
	Settle(wait, func() bool {
		leaked = leaked[:0]
		for i, g := range goroutines() {
			// The first goroutine of a full dump is the caller's own.
			if i == 0 || g.benign() {
				continue
			}
			if _, ok := base.ids[g.id]; ok {
				continue
			}
			leaked = append(leaked, g.stack)
		}
		return len(leaked) == 0
	})
	return leaked
}

// Settle calls done until it reports true or wait has passed, backing off
// from 1 ms to 100 ms between calls, and says whether it did. For state
// that other goroutines put back after the test's last step (a slot an
// abandoned hook gives back, a goroutine on its way out); wait <= 0 looks
// once.
func Settle(wait time.Duration, done func() bool) bool {
	deadline := time.Now().Add(wait)
	backoff := time.Millisecond
	for {
		if done() {
			return true
		}
		if !time.Now().Before(deadline) {
			return false
		}
		time.Sleep(min(backoff, time.Until(deadline)))
		backoff = min(2*backoff, 100*time.Millisecond)
	}
}

// VerifyNone marks t failed, with their stacks, when goroutines that were not
// in base are still running after DefaultWait.
func VerifyNone(t testing.TB, base Baseline) {
	t.Helper()
	if leaked := Leaked(base, patience); len(leaked) > 0 {
		t.Errorf("leakcheck: %d goroutine(s) leaked:\n\n%s", len(leaked), strings.Join(leaked, "\n\n"))
	}
}

// Check takes a Snapshot now and verifies it with VerifyNone when t ends.
// Cleanups registered after Check run before the verification, so a server
// closed with t.Cleanup is gone by then.
func Check(t testing.TB) {
	t.Helper()
	base := Snapshot()
	t.Cleanup(func() { VerifyNone(t, base) })
}

// Main runs the tests and, when they passed, fails the binary if any
// goroutine other than benign ones outlived them. It never returns.
func Main(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaked := Leaked(Baseline{}, patience); len(leaked) > 0 {
			fmt.Fprintf(os.Stderr, "leakcheck: %d goroutine(s) leaked after the tests passed:\n\n%s\n", len(leaked), strings.Join(leaked, "\n\n"))
			code = 1
		}
	}
	os.Exit(code)
}

type goroutine struct {
	id    uint64
	stack string   // as printed by runtime.Stack
	funcs []string // frames, innermost first
}

// benign reports goroutines owned by the runtime or the test framework,
// which come and go on their own.
func (g goroutine) benign() bool {
	if len(g.funcs) == 0 {
		return false
	}
	entry := g.funcs[len(g.funcs)-1]
	for _, p := range []string{"testing.", "runtime.", "runtime/trace.", "runtime/pprof.", "os/signal."} {
		if strings.HasPrefix(entry, p) {
			return true
		}
	}
	// The main goroutine of a test binary, while it drives the tests.
	return entry == "main.main" && slices.Contains(g.funcs, "testing.(*M).Run")
}

func goroutines() []goroutine {
	buf := make([]byte, 64<<10)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var gs []goroutine
	for block := range bytes.SplitSeq(buf, []byte("\n\n")) {
		if g, ok := parse(string(bytes.TrimSpace(block))); ok {
			gs = append(gs, g)
		}
	}
	return gs
}

// parse reads one goroutine of a runtime.Stack dump:
//
//	goroutine 7 [chan receive]:
//	main.worker(0xc000012345)
//		/src/main.go:12 +0x25
//	created by main.main in goroutine 1
//		/src/main.go:8 +0x3c
func parse(block string) (goroutine, bool) {
	header, rest, _ := strings.Cut(block, "\n")
	idText, ok := strings.CutPrefix(header, "goroutine ")
	if !ok {
		return goroutine{}, false
	}
	idText, _, _ = strings.Cut(idText, " ")
	id, err := strconv.ParseUint(idText, 10, 64)
	if err != nil {
		return goroutine{}, false
	}
	g := goroutine{id: id, stack: block}
	for line := range strings.SplitSeq(rest, "\n") {
		if line == "" || strings.HasPrefix(line, "\t") || strings.HasPrefix(line, "created by ") || strings.HasPrefix(line, "...") {
			continue
		}
		// A goroutine that has not run yet shows its base frame, goexit.
		if f := funcName(line); f != "runtime.goexit" {
			g.funcs = append(g.funcs, f)
		}
	}
	return g, true
}

// funcName strips the argument list from a frame line such as
// "net/http.(*conn).serve(0xc0001, {0x2, 0x3})".
func funcName(line string) string {
	if i := strings.LastIndexByte(line, '('); i > 0 && strings.HasSuffix(line, ")") {
		return line[:i]
	}
	return line
}
