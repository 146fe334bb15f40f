package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/relaykit/responsesrelay/billing"
)

// A process that is killed leaves the holds of its turns in flight in the
// ledger, where they count against their keys' budgets until the ledger's
// hold lifetime (an hour) runs out. With a spool, relayd keeps a journal
// of its holds in the spool directory, which is its own (the spool locks
// it), and the next start releases those a killed run left. Releasing is
// safe whatever became of the turn: a turn whose record waits in the spool
// is still debited when the record is replayed (a settle needs no hold),
// and one that was settled is not touched (a release after a settle
// changes nothing).
//
// The journal is appended to, one line per event: "+id" before a Hold,
// "-id" once the hold ended (refused, settled, released). Each is one
// write(2) and no fsync: the kernel keeps what a killed process wrote; a
// machine that loses power may lose the journal's tail, and those holds
// then expire in the ledger. It is rewritten with the holds still open
// whenever it has grown past holdJournalSlack lines beyond them.

// holdJournalFile is the journal's name in the spool directory; the spool
// reads only its own segment and ack files.
const holdJournalFile = "relayd-holds"

// holdJournalSlack is how many lines the journal may hold beyond its open
// holds before it is rewritten.
const holdJournalSlack = 4096

// releaseTimeout bounds the release of one hold a killed run left.
const releaseTimeout = 10 * time.Second

// holdJournal is the journal of one process.
type holdJournal struct {
	log *slog.Logger

	mu    sync.Mutex
	path  string
	f     *os.File            // nil before open and after close: events are kept in memory only
	open  map[string]struct{} // holds begun and not ended
	lines int                 // in the file since it was last written whole
}

func newHoldJournal(log *slog.Logger) *holdJournal {
	return &holdJournal{log: log, open: map[string]struct{}{}}
}

// journaledLedger records the holds of l in j.
type journaledLedger struct {
	ledger
	j *holdJournal
}

func (l journaledLedger) Hold(ctx context.Context, q billing.Request) (billing.Remaining, error) {
	// Before the call: a kill between the ledger's commit and a line
	// written after it would leave a hold the journal never knew.
	l.j.begin(q.RequestID)
	r, err := l.ledger.Hold(ctx, q)
	if err != nil {
		// A refusal holds nothing; a failed call most likely neither (a
		// hold it made anyway expires in the ledger).
		l.j.end(q.RequestID)
	}
	return r, err
}

func (l journaledLedger) Settle(ctx context.Context, u billing.Usage) error {
	err := l.ledger.Settle(ctx, u)
	if err == nil {
		l.j.end(u.RequestID)
	}
	return err
}

func (l journaledLedger) Release(ctx context.Context, id string) error {
	err := l.ledger.Release(ctx, id)
	if err == nil {
		l.j.end(id) // else it stays open, for the next start to release
	}
	return err
}

// journalable reports whether an id can be a line of the journal. The
// relay's ids always are.
func journalable(id string) bool { return id != "" && !strings.ContainsAny(id, "\r\n") }

func (j *holdJournal) begin(id string) {
	if !journalable(id) {
		return
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	j.open[id] = struct{}{}
	j.write('+', id)
}

func (j *holdJournal) end(id string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if _, ok := j.open[id]; !ok {
		return // a record replayed from an earlier run, or never held
	}
	delete(j.open, id)
	j.write('-', id)
	if j.lines > len(j.open)+holdJournalSlack {
		j.rewrite()
	}
}

// write appends one line; j.mu is held. A failed write is logged: the
// hold then expires in the ledger if this process is killed.
func (j *holdJournal) write(op byte, id string) {
	if j.f == nil {
		return
	}
	j.lines++
	if _, err := j.f.Write([]byte(string(op) + id + "\n")); err != nil {
		j.log.Warn("relayd: hold journal write failed; a hold of a killed run expires in the ledger instead", "error", err)
	}
}

// rewrite replaces the file by the open holds alone; j.mu is held. The
// rename is atomic: a kill leaves the old file or the new one.
func (j *holdJournal) rewrite() {
	j.lines = len(j.open) // tried again only after as many lines more
	tmp := j.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		j.log.Warn("relayd: hold journal not rewritten", "error", err)
		return
	}
	w := bufio.NewWriter(f)
	for id := range j.open {
		w.WriteString("+" + id + "\n")
	}
	err = w.Flush()
	if err == nil {
		err = os.Rename(tmp, j.path)
	}
	if err != nil {
		f.Close()
		os.Remove(tmp)
		j.log.Warn("relayd: hold journal not rewritten", "error", err)
		return
	}
	// f is now the journal, positioned at its end: append to it.
	j.f.Close()
	j.f = f
}

// openIn takes over the journal in dir: it releases through l the holds an
// earlier run left open, writes the journal anew with those it could not
// release (the next start tries again) and the holds begun meanwhile, and
// appends from then on. Call it once the spool has locked dir, before the
// relay serves.
func (j *holdJournal) openIn(dir string, l billing.Ledger) error {
	path := filepath.Join(dir, holdJournalFile)
	left, err := readHoldJournal(path)
	if err != nil {
		return err
	}
	var released, failed int
	for id := range left {
		ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
		err := l.Release(ctx, id)
		cancel()
		if err != nil {
			failed++
			j.log.Warn("relayd: a hold left by an earlier run not released; it expires in the ledger", "request_id", id, "error", err)
			continue
		}
		delete(left, id)
		released++
	}
	if released+failed > 0 {
		j.log.Info("relayd: released the holds of turns an earlier run left in flight", "released", released, "failed", failed)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	j.path = path
	for id := range left {
		j.open[id] = struct{}{}
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	j.f = f
	j.rewrite()
	return nil
}

// readHoldJournal returns the ids a journal holds open. A missing file
// holds none; a line cut short (power lost mid-write) is a wrong id, which
// releasing cannot harm.
func readHoldJournal(path string) (map[string]struct{}, error) {
	open := map[string]struct{}{}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return open, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 4096), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if len(line) < 2 {
			continue
		}
		switch id := line[1:]; line[0] {
		case '+':
			open[id] = struct{}{}
		case '-':
			delete(open, id)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return open, nil
}

// close writes the open holds alone (those whose records the spool still
// keeps, or whose release failed) and closes the file.
func (j *holdJournal) close() {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return
	}
	j.rewrite()
	j.f.Close()
	j.f = nil
}
