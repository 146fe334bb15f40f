package billing

import (
	"context"
	"io"
)

// Hooks into Spool for the tests of package billing_test.

// Every spool a test opens gets a probe.
func init() { newSpoolProbe = func() *spoolProbe { return &spoolProbe{} } }

// CrashSpool abandons s as a killed process would: no drain, no more
// acknowledgements; the directory can then be opened again.
func CrashSpool(s *Spool) { s.crash() }

// SpoolSyncs reports how many fsyncs s made.
func SpoolSyncs(s *Spool) int64 { return s.probe.syncs.Load() }

// WaitSpoolPending waits until at most n records of s are unacknowledged.
func WaitSpoolPending(ctx context.Context, s *Spool, n int) error { return s.waitPending(ctx, n) }

// OnSpoolRoomWait makes every Record that starts waiting for room call f.
// Set it before the first Record.
func OnSpoolRoomWait(s *Spool, f func()) { s.probe.roomWait = f }

// WithSegmentBytes sets the segment size of a spool, so that tests see
// segments rotate after a few records.
func WithSegmentBytes(o DeliveryOptions, n int64) DeliveryOptions {
	o.segmentBytes = n
	return o
}

// OnAsyncBatchWait makes a worker of a, delivering to a BatchSink, call f
// each time it starts to wait for more records of a batch. Set it before
// the first Record.
func OnAsyncBatchWait(a *Async, f func()) { a.onBatchWait = f }

// ReadPriceFileLimit is ReadPriceFile with a size limit of limit bytes in
// place of 64 MiB, so that tests of the limit need not build such a file.
func ReadPriceFileLimit(r io.Reader, limit int64) (map[string]Price, error) {
	return readPriceFile(r, limit)
}

// LedgerSizes reports what m keeps: its scopes (keys and users), holds in
// flight, entries of its hold queue and settled ids remembered.
func LedgerSizes(m *MemoryLedger) (scopes, holds, holdQueue, settled int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.keys) + len(m.users), len(m.holds), m.holdQ.n, len(m.settled)
}

// SetLedgerMaxHolds bounds the holds m keeps in flight to n, so that tests
// of the bound need not make 262 144.
func SetLedgerMaxHolds(m *MemoryLedger, n int) { m.maxHolds = n }

// SpoolQueued is how many records read back wait for a worker.
func SpoolQueued(s *Spool) int { return len(s.jobs) }
