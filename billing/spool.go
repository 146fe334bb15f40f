package billing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relaykit/responsesrelay/internal/knob"
)

// Defaults of DeliveryOptions for a Spool.
const (
	defaultSpoolCommitBytes  = 256 << 10
	defaultSpoolSegmentBytes = 16 << 20
	defaultSpoolMaxBytes     = 1 << 30
	defaultSpoolFullWait     = time.Second
)

func (o DeliveryOptions) forSpool() DeliveryOptions {
	o.commitBytes = knob.Or(o.commitBytes, defaultSpoolCommitBytes)
	o.segmentBytes = knob.Or(o.segmentBytes, defaultSpoolSegmentBytes)
	if o.MaxBytes == 0 {
		o.MaxBytes = defaultSpoolMaxBytes
	}
	if o.FullWait == 0 {
		o.FullWait = defaultSpoolFullWait
	}
	o.Workers = knob.Positive("billing.DeliveryOptions.Workers", o.Workers, defaultAsyncWorkers)
	if o.AttemptTimeout == 0 {
		o.AttemptTimeout = defaultAsyncAttemptTimeout
	}
	o.RetryBase, o.RetryMax = retryWaits(o.RetryBase, o.RetryMax)
	o.MaxBatch = knob.Or(o.MaxBatch, defaultAsyncMaxBatch)
	return o
}

// Spool is a durable UsageSink: Record appends the record to a local file
// and syncs it before it returns, and workers deliver it to the next sink
// from there, the records waiting together in one RecordBatch when the
// next sink is a BatchSink (DeliveryOptions.MaxBatch). A record is
// acknowledged on disk only after the next sink returned nil for it or
// its batch (or, with MaxRetries set, after it was given up);
// OpenSpool delivers again whatever an earlier run left unacknowledged.
//
// # Durability
//
// A record for which Record returned nil survives a crash of the process
// and, since it was fsynced, a power loss or kernel crash: new segment
// files are made durable by syncing the directory too. Only records whose
// Record had not returned are lost, and their turns had not finished.
//
// Acknowledgements are written but not synced: a crash can lose the last
// ones, and a record delivered just before it is delivered again after the
// restart. The next sink must therefore be idempotent by Usage.RequestID
// (insert or ignore), as any sink behind retries must be.
//
// # Cost
//
// An fsync takes from tens of microseconds (NVMe) to several milliseconds
// (network disks); one per record would cap a relay at that many turns per
// second. Records are written in groups instead: concurrent Records append
// to a shared buffer, one write and one fsync commit them all, and then
// each of them returns. The records that arrive while a sync runs form the
// next group, so groups grow with the load and with the cost of a sync: a
// busy relay pays a small share of an fsync per turn, an idle one a whole
// fsync and nothing more. CommitDelay trades latency for fewer syncs.
//
// # Delivery
//
// Synced records are read back from disk in write order, so memory stays
// flat however far the next sink falls behind, and replay after a restart
// takes the same path. Workers make one attempt at a time; a failed record
// waits for its retry (jittered exponential backoff) aside, so that a few
// records the next sink keeps refusing do not hold up the others. At most
// 16 records per worker are in flight, retries included. By default a
// record is retried until it is delivered: the disk is the buffer for a
// database outage, bounded by MaxBytes.
//
// # Files
//
// dir holds append-only segments NNNNNNNNNNNNNNNNNNNN.seg (a 20-digit
// sequence number, so that names sort in write order), each with an ack
// log NNNNNNNNNNNNNNNNNNNN.ack, and a LOCK file that OpenSpool locks so
// that one Spool at a time uses the directory. Integers are little-endian:
//
//	segment: "rrspool1", then records [len u32][crc u32][JSON of a Usage]
//	ack log: entries [offset u64][crc u32], one per acknowledged record
//
// A record's crc is CRC-32C over its len field and JSON; an entry's, over
// its offset, the record's position in the segment. A new segment starts
// when one would grow past its segment size, and a segment whose records are
// all acknowledged is deleted with its ack log. Reading stops at the first
// record or entry that is short or fails its check: a write torn by a
// crash is ignored, with a warning, and so is anything after it.
type Spool struct {
	dir  string
	next UsageSink
	o    DeliveryOptions
	lock *os.File

	// gmu guards the group being filled and closed.
	gmu    sync.Mutex
	group  *group
	closed bool

	kick          chan struct{}   // cap 1: a group got its first record
	full          chan struct{}   // cap 1: a group reached its commit size
	closing       context.Context // canceled by Close: ends waits for room
	closeNow      context.CancelFunc
	stopCommit    chan struct{} // closed by Close: commit the last group and stop
	committerDone chan struct{}

	// Owned by the committer (and by Close once the committer stopped).
	active *segment
	nextID uint64

	// mu guards the segments' shared fields and the counters below.
	mu           sync.Mutex
	segs         []*segment    // oldest first
	pending      int           // records stored and not acknowledged
	pendingBytes int64         // their size on disk
	acked        chan struct{} // made by waiters, closed by the next ack
	retries      retryHeap

	progress  chan struct{} // cap 1: more synced bytes, or a sealed segment
	retryKick chan struct{} // cap 1: a job joined retries
	slots     chan struct{} // one per job in flight
	jobs      chan job
	batch     BatchSink // next, when it takes batches and MaxBatch > 1
	runCtx    context.Context
	stop      context.CancelCauseFunc
	workers   sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
	warnedAt  atomic.Int64 // unix nanos of the last over-budget warning
	failedAt  atomic.Int64 // unix nanos of the last delivery failure warning
	failures  atomic.Int64 // delivery failures since that warning

	probe *spoolProbe // nil outside tests
}

// spoolProbe is what tests of the spool watch and steer. OpenSpool gives a
// spool one only when newSpoolProbe is set, which only the package's tests
// do.
type spoolProbe struct {
	crashed  bool         // under Spool.mu: a killed process, no more acks
	syncs    atomic.Int64 // fsync calls
	roomWait func()       // called when a Record starts waiting for room
}

var newSpoolProbe func() *spoolProbe

// crashed reports a simulated dead process; s.mu is held.
func (s *Spool) crashed() bool { return s.probe != nil && s.probe.crashed }

func (s *Spool) countSync() {
	if s.probe != nil {
		s.probe.syncs.Add(1)
	}
}

// group is the records of one write and fsync.
type group struct {
	buf   []byte
	n     int
	first time.Time
	done  chan struct{}
	err   error // set before done is closed
}

type segment struct {
	id uint64

	// Committer only.
	f       *os.File // nil once sealed
	written int64

	// Guarded by Spool.mu.
	ack     *os.File
	size    int64 // bytes of whole, synced records: what the reader may read
	unacked int
	sealed  bool // no more records will be added
	keep    bool // could not be read back: never deleted in this run
	deleted bool

	acked map[int64]struct{} // offsets acknowledged by earlier runs; read-only
}

// job is a record on its way to the next sink.
type job struct {
	seg      *segment
	off      int64
	size     int64
	u        Usage
	failures int
	due      time.Time // of the next retry
}

// retryHeap orders failed jobs by due time.
type retryHeap []job

func (h retryHeap) Len() int           { return len(h) }
func (h retryHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h retryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *retryHeap) Push(x any)        { *h = append(*h, x.(job)) }
func (h *retryHeap) Pop() any {
	old := *h
	j := old[len(old)-1]
	*h = old[:len(old)-1]
	return j
}

// inFlightPerWorker bounds the records read back and not yet acknowledged
// (being delivered or waiting for a retry), per worker.
const inFlightPerWorker = 16

// errCrashed ends the goroutines of a Spool abandoned by crash (tests).
var errCrashed = errors.New("billing: spool abandoned")

// OpenSpool opens the spool in dir, creating dir if needed, and starts
// delivering to next: first the records an earlier run left
// unacknowledged, in the order they were written, then new ones.
func OpenSpool(dir string, next UsageSink, o DeliveryOptions) (*Spool, error) {
	if next == nil {
		return nil, errors.New("billing: OpenSpool with a nil sink")
	}
	if err := os.MkdirAll(dir, spoolDirMode); err != nil {
		return nil, fmt.Errorf("billing: spool: %w", err)
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	tightenSpool(dir, log)
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	s := &Spool{
		dir: dir, next: next, o: o.forSpool(), lock: lock,
		kick:          make(chan struct{}, 1),
		full:          make(chan struct{}, 1),
		stopCommit:    make(chan struct{}),
		committerDone: make(chan struct{}),
		progress:      make(chan struct{}, 1),
		retryKick:     make(chan struct{}, 1),
		jobs:          make(chan job),
		nextID:        1,
	}
	if newSpoolProbe != nil {
		s.probe = newSpoolProbe()
	}
	s.group = &group{done: make(chan struct{})}
	s.slots = make(chan struct{}, inFlightPerWorker*s.o.Workers)
	if bs, ok := next.(BatchSink); ok && s.o.MaxBatch > 1 {
		// The records read back wait in the channel, so that a worker
		// finds those read while it delivered and takes them together.
		s.batch, s.jobs = bs, make(chan job, cap(s.slots))
	}
	s.closing, s.closeNow = context.WithCancel(context.Background())
	if err := s.load(); err != nil {
		for _, seg := range s.segs {
			seg.ack.Close()
		}
		lock.Close()
		return nil, err
	}
	if s.pending > 0 {
		s.logger().Info("billing: spool: delivering records left by an earlier run",
			slog.String("dir", dir), slog.Int("records", s.pending))
	}
	s.runCtx, s.stop = context.WithCancelCause(context.Background())
	go s.commitLoop()
	s.workers.Go(s.readLoop)
	s.workers.Go(s.retryLoop)
	for range s.o.Workers {
		s.workers.Go(s.work)
	}
	return s, nil
}

// load takes over the segments of earlier runs: fully acknowledged ones
// are deleted, the others wait for the reader.
func (s *Spool) load() error {
	ids, err := listSegments(s.dir)
	if err != nil {
		return fmt.Errorf("billing: spool: %w", err)
	}
	for _, id := range ids {
		s.nextID = id + 1
		segPath, ackPath := s.path(segName(id)), s.path(ackName(id))
		acked, err := loadAcks(ackPath)
		if err != nil {
			return fmt.Errorf("billing: spool: %w", err)
		}
		sc, err := scanSegment(segPath, acked)
		if err != nil {
			return fmt.Errorf("billing: spool: %w", err)
		}
		if sc.torn > 0 {
			s.logger().Warn("billing: spool: ignoring the torn end of a segment (a write cut short by a crash)",
				slog.String("segment", segPath), slog.Int64("bytes", sc.torn), slog.Int("records", sc.records))
		}
		if sc.unacked == 0 {
			if err := removeSegment(segPath, ackPath); err != nil {
				return err
			}
			continue
		}
		ack, err := os.OpenFile(ackPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return fmt.Errorf("billing: spool: %w", err)
		}
		s.segs = append(s.segs, &segment{
			id: id, ack: ack, size: sc.size, unacked: sc.unacked, sealed: true, acked: acked,
		})
		s.pending += sc.unacked
		s.pendingBytes += sc.unackedBytes
	}
	return nil
}

func removeSegment(segPath, ackPath string) error {
	// The segment first: an ack log left alone is removed by the next
	// open, a segment left without its acks would be delivered again.
	for _, p := range []string{segPath, ackPath} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("billing: spool: %w", err)
		}
	}
	return nil
}

// Record stores u durably and returns nil once it is synced to disk; the
// delivery to the next sink happens later. ctx bounds only the wait for
// room when the spool is over MaxBytes.
//
// When u cannot be stored (a write or sync failed, the disk is full) or
// the spool is closed, Record delivers u to the next sink itself, with
// MaxRetries retries (5 when MaxRetries is 0), and returns nil or, after
// OnDropped and the error log saw the record, an error wrapping
// ErrDropped.
func (s *Spool) Record(ctx context.Context, u Usage) error {
	payload, err := json.Marshal(u)
	if err == nil && len(payload) > maxPayload {
		err = fmt.Errorf("record of %d bytes is over the %d-byte limit", len(payload), maxPayload)
	}
	if err != nil {
		return s.direct(ctx, u, fmt.Errorf("billing: spool: %w", err))
	}
	s.waitRoom(ctx)

	s.gmu.Lock()
	if s.closed {
		s.gmu.Unlock()
		s.mu.Lock()
		crashed := s.crashed()
		s.mu.Unlock()
		if crashed {
			return errCrashed
		}
		return s.direct(ctx, u, errors.New("billing: spool: Record after Close"))
	}
	g := s.group
	if g.n == 0 {
		g.first = time.Now()
	}
	g.buf = appendFrame(g.buf, payload)
	g.n++
	first, full := g.n == 1, len(g.buf) >= s.o.commitBytes
	s.gmu.Unlock()
	if first {
		notify(s.kick)
	}
	if full {
		notify(s.full)
	}

	<-g.done
	if g.err != nil {
		return s.direct(ctx, u, g.err)
	}
	return nil
}

// Pending reports how many records are stored and not yet acknowledged:
// waiting for a worker, being delivered, or waiting for a retry.
func (s *Spool) Pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pending
}

// Close stops accepting records (later Records deliver directly, see
// Record), commits the last group, waits until every stored record is
// acknowledged, syncs the ack logs and closes the files. Segments whose
// records were all delivered are deleted, so a drained spool leaves only
// its LOCK file.
//
// If ctx ends first, Close cancels the deliveries in progress, waits for
// the sink calls to return (at once for a sink that honors its context),
// and returns an error wrapping ctx.Err(). Nothing is dropped: the records
// not delivered stay in the directory for the next OpenSpool. Calling
// Close again returns the first call's result.
func (s *Spool) Close(ctx context.Context) error {
	s.closeOnce.Do(func() { s.closeErr = s.shutdown(ctx, false) })
	return s.closeErr
}

// crash abandons the spool as a killed process would: no drain, no more
// acknowledgements, no syncs; the files are closed so that the directory
// can be opened again. For tests.
func (s *Spool) crash() {
	s.closeOnce.Do(func() { s.closeErr = s.shutdown(context.Background(), true) })
}

func (s *Spool) shutdown(ctx context.Context, crash bool) error {
	if crash && s.probe != nil {
		s.mu.Lock()
		s.probe.crashed = true
		s.mu.Unlock()
	}
	s.gmu.Lock()
	s.closed = true
	s.gmu.Unlock()
	s.closeNow()
	close(s.stopCommit)
	<-s.committerDone

	var err error
	if !crash {
		if a := s.active; a != nil {
			s.seal(a)
		}
		if s.waitPending(ctx, 0) != nil {
			err = ctx.Err()
		}
	}
	cause := errCrashed
	if err != nil {
		cause = fmt.Errorf("billing: spool Close gave up: %w", err)
	} else if !crash {
		cause = errors.New("billing: spool closed")
	}
	s.stop(cause)
	s.workers.Wait()

	s.mu.Lock()
	left := s.pending
	for _, seg := range s.segs {
		if seg.f != nil {
			seg.f.Close()
		}
		if !crash {
			seg.ack.Sync() // a clean restart should not deliver again
		}
		seg.ack.Close()
	}
	s.mu.Unlock()
	if !crash {
		_ = syncDir(s.dir) // deletions too
	}
	s.lock.Close()
	if err != nil {
		s.logger().Warn("billing: spool closed before every record was delivered; they stay for the next open",
			slog.String("dir", s.dir), slog.Int("records", left))
		return fmt.Errorf("billing: spool closed with %d record(s) undelivered, kept in %s for the next OpenSpool: %w",
			left, s.dir, err)
	}
	return nil
}

// waitPending waits until at most n records are unacknowledged.
func (s *Spool) waitPending(ctx context.Context, n int) error {
	return s.waitAcks(ctx, func() bool { return s.pending <= n })
}

// waitAcks waits until ok, called with s.mu held after each ack, holds.
func (s *Spool) waitAcks(ctx context.Context, ok func() bool) error {
	for {
		s.mu.Lock()
		if ok() {
			s.mu.Unlock()
			return nil
		}
		if s.acked == nil {
			s.acked = make(chan struct{})
		}
		acked := s.acked
		s.mu.Unlock()
		select {
		case <-acked:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// waitRoom applies backpressure while unacknowledged records fill
// MaxBytes.
func (s *Spool) waitRoom(ctx context.Context) {
	if s.o.MaxBytes < 0 {
		return
	}
	under := func() bool { return s.pendingBytes < s.o.MaxBytes }
	s.mu.Lock()
	ok := under()
	s.mu.Unlock()
	if ok {
		return
	}
	if s.o.FullWait > 0 {
		if s.probe != nil && s.probe.roomWait != nil {
			s.probe.roomWait()
		}
		wctx, cancel := context.WithTimeout(ctx, s.o.FullWait)
		stop := context.AfterFunc(s.closing, cancel)
		err := s.waitAcks(wctx, under)
		stop()
		cancel()
		if err == nil {
			return
		}
	}
	now := time.Now().UnixNano()
	if last := s.warnedAt.Load(); now-last >= int64(10*time.Second) && s.warnedAt.CompareAndSwap(last, now) {
		s.mu.Lock()
		used := s.pendingBytes
		s.mu.Unlock()
		s.logger().Warn("billing: spool is over MaxBytes: the next sink is not keeping up; writing anyway",
			slog.String("dir", s.dir), slog.Int64("bytes", used), slog.Int64("max_bytes", s.o.MaxBytes))
	}
}

func (s *Spool) path(name string) string { return filepath.Join(s.dir, name) }

func (s *Spool) logger() *slog.Logger {
	if s.o.Logger != nil {
		return s.o.Logger
	}
	return slog.Default()
}

// notify wakes the one goroutine waiting on a cap-1 channel, if any.
func notify(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
