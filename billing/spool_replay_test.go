package billing_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/billing"
)

func TestSpoolReplaysUndeliveredAfterCrash(t *testing.T) {
	dir := t.TempDir()
	s := openSpool(t, dir, hung, billing.DeliveryOptions{})
	recordAll(t, s, 0, 30)
	if n := s.Pending(); n != 30 {
		t.Fatalf("Pending = %d, want 30", n)
	}
	billing.CrashSpool(s)

	s = openSpool(t, dir, hung, billing.DeliveryOptions{}) // still down: nothing is acknowledged
	if n := s.Pending(); n != 30 {
		t.Fatalf("Pending after reopen = %d, want the 30 undelivered records", n)
	}
	billing.CrashSpool(s)

	db := newIdempotent()
	s = openSpool(t, dir, db, billing.DeliveryOptions{})
	closeSpool(t, s)
	if got := db.ids(); !slices.Equal(got, wantIDs(0, 30)) {
		t.Fatalf("replayed %v, want all 30", got)
	}
	for id, n := range db.calls {
		if n != 1 {
			t.Fatalf("%s delivered %d times, want once", id, n)
		}
	}
	if left := files(t, dir, ".seg"); len(left) != 0 {
		t.Fatalf("segments left after everything was delivered: %v", left)
	}
}

func TestSpoolDoesNotReplayAcknowledged(t *testing.T) {
	dir := t.TempDir()
	first := newIdempotent()
	evenOnly := billing.SinkFunc(func(ctx context.Context, u billing.Usage) error {
		var i int
		fmt.Sscanf(u.RequestID, "req_%d", &i)
		if i%2 == 1 {
			return errors.New("db: timeout")
		}
		return first.Record(ctx, u)
	})
	s := openSpool(t, dir, evenOnly, billing.DeliveryOptions{})
	recordAll(t, s, 0, 20)
	waitPending(t, s, 10) // the even ones are acknowledged
	billing.CrashSpool(s)

	second := newIdempotent()
	s = openSpool(t, dir, second, billing.DeliveryOptions{})
	closeSpool(t, s)
	var odd []string
	for i := 1; i < 20; i += 2 {
		odd = append(odd, record(i).RequestID)
	}
	if got := second.ids(); !slices.Equal(got, odd) {
		t.Fatalf("replayed %v, want only the 10 unacknowledged (odd) records", got)
	}
	if got := first.ids(); len(got) != 10 {
		t.Fatalf("first run stored %d records, want 10", len(got))
	}
}

// A record the sink stored but the spool had not acknowledged when the
// process died is delivered again, and an idempotent sink keeps one row.
func TestSpoolRedeliversStoredButUnacknowledged(t *testing.T) {
	dir := t.TempDir()
	db := newIdempotent()
	entered := make(chan struct{})
	dying := billing.SinkFunc(func(ctx context.Context, u billing.Usage) error {
		close(entered)
		<-ctx.Done() // the crash: the write lands, its acknowledgement does not
		return db.Record(ctx, u)
	})
	s := openSpool(t, dir, dying, billing.DeliveryOptions{Workers: 1})
	recordAll(t, s, 0, 1)
	<-entered
	billing.CrashSpool(s)
	if got := db.ids(); !slices.Equal(got, wantIDs(0, 1)) {
		t.Fatalf("first run stored %v, want req_000", got)
	}

	s = openSpool(t, dir, db, billing.DeliveryOptions{})
	closeSpool(t, s)
	if n := db.calls["req_000"]; n != 2 {
		t.Fatalf("req_000 delivered %d times, want 2 (once more after the restart)", n)
	}
	if got := db.ids(); !slices.Equal(got, wantIDs(0, 1)) {
		t.Fatalf("rows %v, want one row for req_000", got)
	}
}

const helperEnv = "BILLING_SPOOL_HELPER_DIR"

// TestSpoolHelperProcess is the child of TestSpoolSurvivesSIGKILL: it
// records until it is killed, printing "D id" when its sink stores a
// record and "R id" when Record returned.
func TestSpoolHelperProcess(t *testing.T) {
	dir := os.Getenv(helperEnv)
	if dir == "" {
		t.Skip("child of TestSpoolSurvivesSIGKILL")
	}
	var out sync.Mutex
	say := func(kind, id string) {
		out.Lock()
		defer out.Unlock()
		os.Stdout.WriteString(kind + " " + id + "\n") // one write: atomic on a pipe
	}
	slow := billing.SinkFunc(func(_ context.Context, u billing.Usage) error {
		time.Sleep(time.Millisecond) // a database round trip, slower than the Records: a backlog builds
		say("D", u.RequestID)
		return nil
	})
	s, err := billing.OpenSpool(dir, slow, billing.DeliveryOptions{Workers: 2, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	var n atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for {
				u := record(0)
				u.RequestID = fmt.Sprintf("kill_%06d", n.Add(1))
				if err := s.Record(context.Background(), u); err != nil {
					fmt.Println("record:", err)
					os.Exit(2)
				}
				say("R", u.RequestID)
			}
		})
	}
	wg.Wait() // never: the parent kills the process
}

func TestSpoolSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestSpoolHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+dir)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	recorded, stored := map[string]bool{}, map[string]bool{}
	killed := false
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		kind, id, ok := strings.Cut(sc.Text(), " ")
		switch {
		case ok && kind == "R":
			recorded[id] = true
		case ok && kind == "D":
			stored[id] = true
		default:
			t.Errorf("child: %s", sc.Text())
		}
		if len(recorded) >= 3000 && !killed {
			if err := cmd.Process.Kill(); err != nil { // SIGKILL: no deferred code runs
				t.Fatal(err)
			}
			killed = true
		}
	}
	_, _ = io.Copy(io.Discard, stdout)
	if err := cmd.Wait(); err == nil || !killed {
		t.Fatalf("child ended by itself (%v) before it was killed", err)
	}

	replayed := newIdempotent()
	s := openSpool(t, dir, replayed, billing.DeliveryOptions{})
	closeSpool(t, s)
	var lost []string
	for id := range recorded {
		if !stored[id] && replayed.calls[id] == 0 {
			lost = append(lost, id)
		}
	}
	if len(lost) > 0 {
		t.Fatalf("%d of %d records whose Record returned were lost, e.g. %v", len(lost), len(recorded), lost[:min(5, len(lost))])
	}
	for id, n := range replayed.calls {
		if n != 1 {
			t.Fatalf("%s replayed %d times, want once", id, n)
		}
		if !strings.HasPrefix(id, "kill_") {
			t.Fatalf("replayed a record the child never wrote: %q", id)
		}
	}
	if len(replayed.calls) == 0 {
		t.Fatal("nothing was replayed: the kill did not catch any record in flight")
	}
	t.Logf("child: %d records returned, %d stored before the kill; %d replayed after it",
		len(recorded), len(stored), len(replayed.calls))
}
