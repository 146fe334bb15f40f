package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/billing"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// failingRelease is a ledger whose Release fails.
type failingRelease struct{ *billing.MemoryLedger }

func (failingRelease) Release(context.Context, string) error { return errors.New("ledger away") }

// The journal of a long run stays small: it is rewritten with the open
// holds once it has grown past them by holdJournalSlack lines, and what
// it says open is exactly what is.
func TestHoldJournalStaysSmall(t *testing.T) {
	dir := t.TempDir()
	j := newHoldJournal(quietLog())
	if err := j.openIn(dir, &billing.MemoryLedger{}); err != nil {
		t.Fatal(err)
	}
	for i := range 10 * holdJournalSlack {
		id := fmt.Sprintf("rr_%06d", i)
		j.begin(id)
		if i%1000 != 0 { // every thousandth stays open
			j.end(id)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, holdJournalFile))
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Count(string(b), "\n"); lines > 2*holdJournalSlack+len(j.open) {
		t.Fatalf("%d lines for %d open holds", lines, len(j.open))
	}
	j.close()
	open, err := readHoldJournal(filepath.Join(dir, holdJournalFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(open) != 41 || !maps.Equal(open, j.open) {
		t.Fatalf("the journal holds %d open, the process %d", len(open), len(j.open))
	}
	if _, err := os.Stat(filepath.Join(dir, holdJournalFile+".tmp")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a temporary file is left: %v", err)
	}
}

// A journal left by a killed run, its last line cut short: the holds it
// says open are released, the ledger's holds of them end, and the journal
// is written anew, empty. A hold whose release fails stays in it for the
// next start.
func TestHoldJournalReleasesWhatAKilledRunLeft(t *testing.T) {
	ctx := context.Background()
	led := &billing.MemoryLedger{}
	lim := billing.Limits{BudgetMicros: 1000}
	for _, id := range []string{"rr_a", "rr_b", "rr_c"} {
		if _, err := led.Hold(ctx, billing.Request{RequestID: id, APIKeyID: "k", KeyLimits: lim, HoldMicros: 10}); err != nil {
			t.Fatal(err)
		}
	}
	// rr_a ended (settled), rr_b did not, rr_c's line was cut short and
	// reads as rr_, which nothing holds.
	if err := led.Settle(ctx, billing.Usage{RequestID: "rr_a", APIKeyID: "k", CostMicros: 7}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, holdJournalFile)
	if err := os.WriteFile(path, []byte("+rr_a\n+rr_b\n-rr_a\n\nx\n+rr_"), 0o600); err != nil {
		t.Fatal(err)
	}
	j := newHoldJournal(quietLog())
	if err := j.openIn(dir, led); err != nil {
		t.Fatal(err)
	}
	j.close()
	b, err := led.Balance(ctx, "k", lim, time.Time{})
	if err != nil || b.Holds != 1 || b.SpentMicros != 7 {
		// rr_c's hold stands: the journal never knew its id whole, so it
		// expires in the ledger.
		t.Fatalf("balance %+v, %v; want rr_c's hold alone and the settled 7", b, err)
	}
	if data, _ := os.ReadFile(path); len(data) != 0 {
		t.Fatalf("journal after the release: %q", data)
	}

	if err := os.WriteFile(path, []byte("+rr_c\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	j = newHoldJournal(quietLog())
	if err := j.openIn(dir, failingRelease{led}); err != nil {
		t.Fatal(err)
	}
	j.close()
	open, err := readHoldJournal(path)
	if err != nil || !slices.Equal(slices.Collect(maps.Keys(open)), []string{"rr_c"}) {
		t.Fatalf("after a failed release the journal holds %v, %v", open, err)
	}
}

// The wrapper journals a hold before the ledger's call, ends it on a
// refusal, a settle or a release, and keeps it when the release fails.
func TestJournaledLedger(t *testing.T) {
	ctx := context.Background()
	j := newHoldJournal(quietLog())
	if err := j.openIn(t.TempDir(), &billing.MemoryLedger{}); err != nil {
		t.Fatal(err)
	}
	defer j.close()
	mem := &billing.MemoryLedger{}
	l := journaledLedger{ledger: mem, j: j}
	lim := billing.Limits{BudgetMicros: 100}
	hold := func(id string, micros int64) error {
		_, err := l.Hold(ctx, billing.Request{RequestID: id, APIKeyID: "k", KeyLimits: lim, HoldMicros: micros})
		return err
	}
	if err := hold("rr_1", 60); err != nil {
		t.Fatal(err)
	}
	if err := hold("rr_2", 60); err == nil {
		t.Fatal("over budget, admitted")
	}
	if err := hold("rr_3", 30); err != nil {
		t.Fatal(err)
	}
	if got := slices.Sorted(maps.Keys(j.open)); !slices.Equal(got, []string{"rr_1", "rr_3"}) {
		t.Fatalf("open %v", got)
	}
	if err := l.Settle(ctx, billing.Usage{RequestID: "rr_1", APIKeyID: "k", CostMicros: 50}); err != nil {
		t.Fatal(err)
	}
	if err := (journaledLedger{ledger: failingRelease{mem}, j: j}).Release(ctx, "rr_3"); err == nil {
		t.Fatal("release did not fail")
	}
	if got := slices.Sorted(maps.Keys(j.open)); !slices.Equal(got, []string{"rr_3"}) {
		t.Fatalf("open after a settle and a failed release: %v", got)
	}
	if err := l.Release(ctx, "rr_3"); err != nil || len(j.open) != 0 {
		t.Fatalf("release: %v, open %v", err, j.open)
	}
}
