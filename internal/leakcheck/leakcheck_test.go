package leakcheck

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	if os.Getenv("LEAKCHECK_CHILD") != "" {
		patience = 100 * time.Millisecond
	}
	Main(m)
}

const pkg = "github.com/relaykit/responsesrelay/internal/leakcheck"

//go:noinline
func parkedForLeakTest(stop <-chan struct{}) { <-stop }

func TestLeakedFindsAndForgets(t *testing.T) {
	base := Snapshot()
	stop := make(chan struct{})
	go parkedForLeakTest(stop)

	leaked := Leaked(base, 0)
	if len(leaked) != 1 || !strings.Contains(leaked[0], "created by "+pkg+".TestLeakedFindsAndForgets") {
		t.Fatalf("Leaked = %q, want the one goroutine this test started", leaked)
	}
	close(stop)
	if leaked := Leaked(base, DefaultWait); len(leaked) != 0 {
		t.Fatalf("after release Leaked = %q, want none", leaked)
	}
}

func TestBaselineHidesOlderGoroutines(t *testing.T) {
	stop := make(chan struct{})
	defer close(stop)
	go parkedForLeakTest(stop)
	if leaked := Leaked(Snapshot(), 0); len(leaked) != 0 {
		t.Fatalf("Leaked = %q, want none: the goroutine predates the snapshot", leaked)
	}
	// Goroutines of earlier tests may still be exiting: count only ours.
	n := 0
	for _, s := range Leaked(Baseline{}, 0) {
		if strings.Contains(s, "created by "+pkg+".TestBaselineHidesOlderGoroutines") {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("against an empty baseline Leaked has %d stacks of this test, want 1", n)
	}
}

func TestSignalGoroutinesAreBenign(t *testing.T) {
	base := Snapshot()
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGUSR1)
	defer signal.Stop(c)
	// The os/signal loop and the runtime's signal goroutine stay for good.
	if leaked := Leaked(base, 0); len(leaked) != 0 {
		t.Fatalf("Leaked = %q, want none", leaked)
	}
}

func TestSubtestGoroutinesAreBenign(t *testing.T) {
	base := Snapshot()
	release := make(chan struct{})
	t.Run("parallel", func(t *testing.T) {
		t.Parallel()
		<-release
	})
	// The parallel subtest is paused in t.Parallel until this test returns:
	// its goroutine exists now.
	if leaked := Leaked(base, DefaultWait); len(leaked) != 0 {
		t.Errorf("Leaked = %q, want none", leaked)
	}
	close(release)
}

// fakeTB records failures instead of failing the real test.
type fakeTB struct {
	testing.TB
	errors   []string
	cleanups []func()
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Errorf(format string, args ...any) {
	f.errors = append(f.errors, fmt.Sprintf(format, args...))
}
func (f *fakeTB) Cleanup(fn func()) { f.cleanups = append(f.cleanups, fn) }

func TestCheckReportsLeak(t *testing.T) {
	defer func(p time.Duration) { patience = p }(patience)
	patience = 50 * time.Millisecond

	f := &fakeTB{TB: t}
	Check(f)
	stop := make(chan struct{})
	go parkedForLeakTest(stop)
	if len(f.cleanups) != 1 {
		t.Fatalf("Check registered %d cleanups, want 1", len(f.cleanups))
	}
	f.cleanups[0]()
	close(stop)
	if len(f.errors) != 1 || !strings.Contains(f.errors[0], "1 goroutine(s) leaked") || !strings.Contains(f.errors[0], "TestCheckReportsLeak") {
		t.Fatalf("errors = %q, want one report naming this test", f.errors)
	}
}

func TestVerifyNonePassesWhenClean(t *testing.T) {
	f := &fakeTB{TB: t}
	base := Snapshot()
	done := make(chan struct{})
	go func() { close(done) }()
	<-done
	VerifyNone(f, base)
	if len(f.errors) != 0 {
		t.Fatalf("errors = %q, want none", f.errors)
	}
}

var childLeak = make(chan struct{})

// TestChildLeaks runs only inside the child process of TestMainFailsOnLeak.
func TestChildLeaks(t *testing.T) {
	if os.Getenv("LEAKCHECK_CHILD") == "" {
		t.Skip("runs as a child process only")
	}
	go parkedForLeakTest(childLeak)
}

func TestMainFailsOnLeak(t *testing.T) {
	if os.Getenv("LEAKCHECK_CHILD") != "" {
		t.Skip("already the child")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestChildLeaks$")
	cmd.Env = append(os.Environ(), "LEAKCHECK_CHILD=1")
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("child exit = %v, want exit status 1; output:\n%s", err, out)
	}
	if !strings.Contains(string(out), "leakcheck: 1 goroutine(s) leaked") || !strings.Contains(string(out), "TestChildLeaks") {
		t.Fatalf("child output lacks the leak report:\n%s", out)
	}
}

func TestParse(t *testing.T) {
	g, ok := parse("goroutine 42 [chan receive, 3 minutes]:\n" +
		"main.(*server).loop(0xc000012345, {0x1, 0x2})\n\t/src/main.go:12 +0x25\n" +
		"main.run[...]()\n\t/src/main.go:20 +0x10\n" +
		"created by main.main in goroutine 1\n\t/src/main.go:8 +0x3c")
	if !ok || g.id != 42 {
		t.Fatalf("parse = %+v, %v", g, ok)
	}
	want := []string{"main.(*server).loop", "main.run[...]"}
	if fmt.Sprint(g.funcs) != fmt.Sprint(want) {
		t.Fatalf("funcs = %q, want %q", g.funcs, want)
	}
	if g.benign() {
		t.Fatal("a main goroutine was judged benign")
	}
	if _, ok := parse("not a goroutine"); ok {
		t.Fatal("parse accepted garbage")
	}
	tr, _ := parse("goroutine 7 [chan receive]:\ntesting.(*T).Run(0xc0, {0x1, 0x2}, 0x3)\n\t/go/testing.go:1 +0x1\ntesting.tRunner(0xc0, 0xc1)\n\t/go/testing.go:2 +0x1\ncreated by testing.(*T).Run in goroutine 1\n\t/go/testing.go:3 +0x1")
	if !tr.benign() {
		t.Fatalf("a testing.tRunner goroutine was not judged benign: %+v", tr)
	}
}
