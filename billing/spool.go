package billing

import (
	"bufio"
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// SpoolOptions tune a Spool. A zero field takes the default in its doc.
type SpoolOptions struct {
	// CommitDelay is how long the first record of a group waits for others
	// before the group is written and synced. Groups form without it too:
	// the records that arrive while a sync runs share the next one. A
	// delay of a millisecond or two saves syncs (disk IOPS) at moderate
	// load, for that much more latency per Record. 0: no delay.
	CommitDelay time.Duration
	// CommitBytes ends the delay as soon as a group holds this many bytes.
	// 0: 256 KiB.
	CommitBytes int
	// SegmentBytes is the size past which records go to a new segment
	// file. A segment is deleted once all its records are acknowledged,
	// so smaller segments give disk space back sooner. 0: 16 MiB.
	SegmentBytes int64
	// MaxBytes bounds the bytes of unacknowledged records. Once they
	// reach it, Record waits up to FullWait for deliveries to make room,
	// then writes the record anyway and logs a warning (at most every
	// 10 s): a spool over budget slows turns down and says so, but never
	// refuses a record. The hard limit is the disk: when a write fails,
	// Record delivers directly (see Record). Acknowledged records leave
	// the disk with their segment, so the disk holds about MaxBytes plus
	// a few segments. 0: 1 GiB; < 0: no bound.
	MaxBytes int64
	// FullWait bounds the wait for room under MaxBytes. 0: 1 s; < 0: none.
	FullWait time.Duration

	// Workers is how many records are delivered to the next sink at once.
	// 0: 4.
	Workers int
	// AttemptTimeout bounds one call to the next sink. 0: 10 s; < 0: none.
	AttemptTimeout time.Duration
	// MaxRetries is how many times a failed delivery is tried again before
	// the record is given up: handed to OnDropped and the error log, then
	// acknowledged, so the spool forgets it. 0: no limit, the record stays
	// in the spool until it is delivered, across restarts; < 0: no retry.
	MaxRetries int
	// RetryBase is the wait before the first retry; it doubles on each
	// retry up to RetryMax, and each wait is drawn between half and all of
	// that. 0: 100 ms and 5 s.
	RetryBase, RetryMax time.Duration
	// OnDropped is called with a record the spool gave up on, and why: its
	// retries ran out, or it could neither be stored nor delivered. nil:
	// only the error log line, which carries the whole record as JSON. A
	// panic in it is recovered and logged.
	OnDropped func(u Usage, err error)
	// Logger gets warnings (sink failures, torn tails, the disk budget)
	// and the error lines of dropped records. nil: slog.Default().
	Logger *slog.Logger
}

// Defaults of SpoolOptions.
const (
	DefaultSpoolCommitBytes  = 256 << 10
	DefaultSpoolSegmentBytes = 16 << 20
	DefaultSpoolMaxBytes     = 1 << 30
	DefaultSpoolFullWait     = time.Second
)

func (o SpoolOptions) withDefaults() SpoolOptions {
	if o.CommitBytes <= 0 {
		o.CommitBytes = DefaultSpoolCommitBytes
	}
	if o.SegmentBytes <= 0 {
		o.SegmentBytes = DefaultSpoolSegmentBytes
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = DefaultSpoolMaxBytes
	}
	if o.FullWait == 0 {
		o.FullWait = DefaultSpoolFullWait
	}
	if o.Workers <= 0 {
		o.Workers = DefaultAsyncWorkers
	}
	if o.AttemptTimeout == 0 {
		o.AttemptTimeout = DefaultAsyncAttemptTimeout
	}
	if o.RetryBase <= 0 {
		o.RetryBase = DefaultAsyncRetryBase
	}
	if o.RetryMax <= 0 {
		o.RetryMax = DefaultAsyncRetryMax
	}
	o.RetryMax = max(o.RetryMax, o.RetryBase)
	return o
}

// Spool is a durable UsageSink: Record appends the record to a local file
// and syncs it before it returns, and workers deliver it to the next sink
// from there. A record is acknowledged on disk only after the next sink
// returned nil for it (or, with MaxRetries set, after it was given up);
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
// when one would grow past SegmentBytes, and a segment whose records are
// all acknowledged is deleted with its ack log. Reading stops at the first
// record or entry that is short or fails its check: a write torn by a
// crash is ignored, with a warning, and so is anything after it.
type Spool struct {
	dir  string
	next UsageSink
	o    SpoolOptions
	lock *os.File

	// gmu guards the group being filled and closed.
	gmu    sync.Mutex
	group  *group
	closed bool

	kick          chan struct{}   // cap 1: a group got its first record
	full          chan struct{}   // cap 1: a group reached CommitBytes
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
	crashed      bool          // tests: simulate a dead process
	retries      retryHeap

	progress  chan struct{} // cap 1: more synced bytes, or a sealed segment
	retryKick chan struct{} // cap 1: a job joined retries
	slots     chan struct{} // one per job in flight
	jobs      chan job
	runCtx    context.Context
	stop      context.CancelCauseFunc
	workers   sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
	syncs     atomic.Int64 // fsync calls, for tests
	warnedAt  atomic.Int64 // unix nanos of the last over-budget warning
	failedAt  atomic.Int64 // unix nanos of the last delivery failure warning
	failures  atomic.Int64 // delivery failures since that warning
	roomWait  func()       // tests: called when a Record starts waiting for room
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
func OpenSpool(dir string, next UsageSink, o SpoolOptions) (*Spool, error) {
	if next == nil {
		return nil, errors.New("billing: OpenSpool with a nil sink")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("billing: spool: %w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	s := &Spool{
		dir: dir, next: next, o: o.withDefaults(), lock: lock,
		kick:          make(chan struct{}, 1),
		full:          make(chan struct{}, 1),
		stopCommit:    make(chan struct{}),
		committerDone: make(chan struct{}),
		progress:      make(chan struct{}, 1),
		retryKick:     make(chan struct{}, 1),
		jobs:          make(chan job),
		nextID:        1,
	}
	s.group = &group{done: make(chan struct{})}
	s.slots = make(chan struct{}, inFlightPerWorker*s.o.Workers)
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
		crashed := s.crashed
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
	first, full := g.n == 1, len(g.buf) >= s.o.CommitBytes
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
	if crash {
		s.mu.Lock()
		s.crashed = true
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
		if s.roomWait != nil {
			s.roomWait()
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

// commitLoop writes and syncs the groups, one at a time.
func (s *Spool) commitLoop() {
	defer close(s.committerDone)
	var spare []byte
	for {
		select {
		case <-s.kick:
		case <-s.stopCommit:
			s.commit(&spare)
			return
		}
		if d := s.o.CommitDelay; d > 0 {
			s.gmu.Lock()
			wait := d - time.Since(s.group.first)
			s.gmu.Unlock()
			if wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-t.C:
				case <-s.full:
				case <-s.stopCommit:
				}
				t.Stop()
			}
		}
		s.commit(&spare)
	}
}

func (s *Spool) commit(spare *[]byte) {
	s.gmu.Lock()
	g := s.group
	if g.n == 0 {
		s.gmu.Unlock()
		return
	}
	s.group = &group{buf: (*spare)[:0], done: make(chan struct{})}
	s.gmu.Unlock()
	select { // a signal for the group just taken
	case <-s.full:
	default:
	}
	g.err = s.write(g.buf, g.n)
	close(g.done)
	*spare = nil
	if cap(g.buf) <= 4*s.o.CommitBytes {
		*spare = g.buf
	}
}

// write appends a group to the active segment and syncs it.
func (s *Spool) write(buf []byte, n int) error {
	seg := s.active
	if seg != nil && seg.written > segHeader && seg.written+int64(len(buf)) > s.o.SegmentBytes {
		s.seal(seg)
		seg = nil
	}
	if seg == nil {
		var err error
		if seg, err = s.newSegment(); err != nil {
			s.logger().Error("billing: spool: cannot create a segment; delivering directly", slog.Any("error", err))
			return err
		}
	}
	_, err := seg.f.Write(buf)
	if err == nil {
		err = s.sync(seg.f)
	}
	if err != nil {
		// After a failed write or fsync the file's state is unknown: keep
		// what was synced and continue in a new segment.
		err = fmt.Errorf("billing: spool: write %s: %w", segName(seg.id), err)
		s.logger().Error("billing: spool: write failed; delivering the group directly", slog.Any("error", err))
		s.mu.Lock()
		size := seg.size
		s.mu.Unlock()
		_ = seg.f.Truncate(size)
		s.seal(seg)
		return err
	}
	seg.written += int64(len(buf))
	s.mu.Lock()
	seg.size = seg.written
	seg.unacked += n
	s.pending += n
	s.pendingBytes += int64(len(buf))
	s.mu.Unlock()
	notify(s.progress)
	return nil
}

// newSegment creates the next segment and makes its name durable. The
// magic is synced with the first group.
func (s *Spool) newSegment() (seg *segment, err error) {
	id := s.nextID
	s.nextID++
	segPath, ackPath := s.path(segName(id)), s.path(ackName(id))
	f, err := os.OpenFile(segPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	var ack *os.File
	defer func() {
		if err != nil {
			f.Close()
			if ack != nil {
				ack.Close()
			}
			_ = removeSegment(segPath, ackPath)
		}
	}()
	if _, err = f.WriteString(segMagic); err != nil {
		return nil, err
	}
	if ack, err = os.OpenFile(ackPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o600); err != nil {
		return nil, err
	}
	s.syncs.Add(1)
	if err = syncDir(s.dir); err != nil {
		return nil, err
	}
	seg = &segment{id: id, f: f, written: segHeader, ack: ack, size: segHeader}
	s.mu.Lock()
	s.segs = append(s.segs, seg)
	s.mu.Unlock()
	s.active = seg
	return seg, nil
}

// seal ends the active segment: no more records go to it.
func (s *Spool) seal(seg *segment) {
	seg.f.Close()
	seg.f = nil
	s.active = nil
	s.mu.Lock()
	seg.sealed = true
	s.maybeDelete(seg)
	s.mu.Unlock()
	notify(s.progress)
}

func (s *Spool) sync(f *os.File) error {
	s.syncs.Add(1)
	return f.Sync()
}

// maybeDelete removes a sealed segment whose records are all acknowledged.
// s.mu is held.
func (s *Spool) maybeDelete(seg *segment) {
	if !seg.sealed || seg.unacked > 0 || seg.keep || seg.deleted || s.crashed {
		return
	}
	seg.deleted = true
	seg.ack.Close()
	if err := removeSegment(s.path(segName(seg.id)), s.path(ackName(seg.id))); err != nil {
		s.logger().Warn("billing: spool: cannot delete a delivered segment", slog.Any("error", err))
	}
	s.segs = slices.DeleteFunc(s.segs, func(x *segment) bool { return x == seg })
}

// readLoop reads the synced records back, segment by segment, and hands
// the unacknowledged ones to the workers. Reading from disk rather than
// from memory keeps memory flat however far the next sink falls behind,
// and makes replay after a restart the same path as normal delivery.
func (s *Spool) readLoop() {
	var (
		cur  *segment
		prev uint64 // id of the last segment read to its end
		f    *os.File
		off  int64
		br   = bufio.NewReaderSize(nil, 64<<10)
		buf  []byte
	)
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	for {
		s.mu.Lock()
		if cur == nil {
			for _, seg := range s.segs {
				if seg.id > prev {
					cur, off = seg, segHeader
					break
				}
			}
		}
		var end int64
		var sealed, deleted bool
		if cur != nil {
			end, sealed, deleted = cur.size, cur.sealed, cur.deleted
		}
		s.mu.Unlock()

		switch {
		case cur != nil && off < end && !deleted:
			if f == nil {
				var err error
				if f, err = os.Open(s.path(segName(cur.id))); err != nil {
					s.unreadable(cur, err)
					off = end
					continue
				}
			}
			br.Reset(io.NewSectionReader(f, off, end-off))
			for off < end {
				payload, n, err := readFrame(br, buf)
				if err != nil {
					s.unreadable(cur, err)
					off = end
					break
				}
				buf = payload
				at := off
				off += n
				if !s.dispatch(cur, at, n, payload) {
					return
				}
			}
		case cur != nil && (sealed || deleted):
			if f != nil {
				f.Close()
				f = nil
			}
			prev, cur = cur.id, nil
		default:
			select {
			case <-s.progress:
			case <-s.runCtx.Done():
				return
			}
		}
	}
}

// dispatch hands one record to a worker; false means the spool stopped.
func (s *Spool) dispatch(seg *segment, off, size int64, payload []byte) bool {
	if _, ok := seg.acked[off]; ok {
		return true
	}
	var u Usage
	if err := json.Unmarshal(payload, &u); err != nil { // not expected: the CRC matched
		s.logger().Error("billing: usage record dropped: the spool cannot decode it; replay it from this line",
			slog.String("segment", segName(seg.id)), slog.Int64("offset", off),
			slog.Any("error", err), slog.String("record", string(payload)))
		s.ack(seg, off, size)
		return true
	}
	select {
	case s.slots <- struct{}{}:
	case <-s.runCtx.Done():
		return false
	}
	select {
	case s.jobs <- job{seg: seg, off: off, size: size, u: u}:
		return true
	case <-s.runCtx.Done():
		return false
	}
}

// unreadable keeps a segment that could not be read back for the next
// run, rather than deleting records it never delivered.
func (s *Spool) unreadable(seg *segment, err error) {
	s.logger().Error("billing: spool: cannot read a segment back; it is kept for the next open",
		slog.String("segment", segName(seg.id)), slog.Any("error", err))
	s.mu.Lock()
	seg.keep = true
	s.mu.Unlock()
}

// work makes one attempt per job. A failed job waits for its retry in
// retries, not in the worker, so that a record the next sink keeps
// refusing does not hold up the others.
func (s *Spool) work() {
	for {
		var j job
		select {
		case j = <-s.jobs:
		case <-s.runCtx.Done():
			return
		}
		err := attemptOnce(s.runCtx, s.next, s.o.AttemptTimeout, j.u)
		if err != nil && s.runCtx.Err() != nil {
			continue // stopped: the record stays in the spool
		}
		if err != nil {
			j.failures++
			if s.o.MaxRetries == 0 || (s.o.MaxRetries > 0 && j.failures <= s.o.MaxRetries) {
				s.warnFailure(j, err)
				j.due = time.Now().Add(jitteredBackoff(s.o.RetryBase, s.o.RetryMax, j.failures))
				s.mu.Lock()
				heap.Push(&s.retries, j)
				s.mu.Unlock()
				notify(s.retryKick)
				continue
			}
			dropRecord(s.o.Logger, s.o.OnDropped, j.u, err, j.failures)
		}
		s.ack(j.seg, j.off, j.size)
		<-s.slots
	}
}

// retryLoop hands failed jobs back to the workers when they are due.
func (s *Spool) retryLoop() {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		var next job
		var wait time.Duration = -1
		s.mu.Lock()
		if len(s.retries) > 0 {
			if wait = time.Until(s.retries[0].due); wait <= 0 {
				next = heap.Pop(&s.retries).(job)
			}
		}
		s.mu.Unlock()
		if wait <= 0 && next.seg != nil {
			select {
			case s.jobs <- next:
				continue
			case <-s.runCtx.Done():
				return
			}
		}
		var due <-chan time.Time
		if wait > 0 {
			timer.Reset(wait)
			due = timer.C
		}
		select {
		case <-due:
		case <-s.retryKick:
		case <-s.runCtx.Done():
			return
		}
		timer.Stop()
	}
}

// warnFailure logs delivery failures, at most one line every 10 s.
func (s *Spool) warnFailure(j job, err error) {
	n := s.failures.Add(1)
	now := time.Now().UnixNano()
	last := s.failedAt.Load()
	if now-last < int64(10*time.Second) || !s.failedAt.CompareAndSwap(last, now) {
		return
	}
	s.failures.Add(-n)
	s.logger().Warn("billing: usage sink failed; the spool retries",
		slog.String("request_id", j.u.RequestID), slog.Int("attempts", j.failures),
		slog.Any("error", err), slog.Int64("failures_since_last_warning", n),
		slog.Int("pending", s.Pending()))
}

// direct delivers a record the spool could not store, in the caller's
// goroutine, so that it is not lost as long as the next sink works.
func (s *Spool) direct(ctx context.Context, u Usage, cause error) error {
	retries := s.o.MaxRetries
	if retries == 0 {
		retries = DefaultAsyncMaxRetries
	}
	ctx = context.WithoutCancel(ctx)
	var err error
	attempts := 1
	for ; ; attempts++ {
		if err = attemptOnce(ctx, s.next, s.o.AttemptTimeout, u); err == nil {
			return nil
		}
		if retries < 0 || attempts > retries {
			break
		}
		time.Sleep(jitteredBackoff(s.o.RetryBase, s.o.RetryMax, attempts))
	}
	err = fmt.Errorf("%w; delivering it directly: %w", cause, err)
	dropRecord(s.o.Logger, s.o.OnDropped, u, err, attempts)
	return fmt.Errorf("%w after %d attempt(s): %w", ErrDropped, attempts, err)
}

// ack records on disk that the record at off of seg, size bytes long,
// needs no delivery.
func (s *Spool) ack(seg *segment, off, size int64) {
	e := ackBytes(off)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.crashed {
		return
	}
	if _, err := seg.ack.Write(e[:]); err != nil {
		s.logger().Warn("billing: spool: cannot write an acknowledgement; the record will be delivered again after a restart",
			slog.String("segment", segName(seg.id)), slog.Any("error", err))
	}
	seg.unacked--
	s.pending--
	s.pendingBytes -= size
	s.maybeDelete(seg)
	if s.acked != nil {
		close(s.acked)
		s.acked = nil
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
