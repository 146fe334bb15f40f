package billing

import (
	"bufio"
	"bytes"
	"container/heap"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"reflect"
	"strings"
	"time"
)

// Delivery: records are read back from the segments in write order, handed
// to workers, retried on a timer, and acknowledged once the sink took them.

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
	if err := decodeUsage(payload, &u); err != nil { // not expected: the CRC matched
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

// work makes one attempt per job, or per batch of the jobs waiting when
// the next sink takes batches (spool_batch.go). A failed job waits for its
// retry in retries, not in the worker, so that a record the next sink
// keeps refusing does not hold up the others.
func (s *Spool) work() {
	var b batchBuf
	for {
		var j job
		select {
		case j = <-s.jobs:
		case <-s.runCtx.Done():
			return
		}
		if s.batch != nil {
			s.deliverWaiting(j, &b)
			continue
		}
		s.deliver(j)
	}
}

// deliver makes one attempt at j: acknowledged when the sink took it (or
// it was given up), else queued for its retry.
func (s *Spool) deliver(j job) {
	err := attemptOnce(s.runCtx, s.next, s.o.AttemptTimeout, j.u)
	if err != nil && s.runCtx.Err() != nil {
		return // stopped: the record stays in the spool
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
			return
		}
		dropRecord(s.o.Logger, s.o.OnDropped, j.u, err, j.failures)
	}
	s.ack(j.seg, j.off, j.size)
	<-s.slots
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
		retries = defaultAsyncMaxRetries
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
	if s.crashed() {
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

// decodeUsage decodes a spooled record. Records spooled before Usage had
// JSON tags name their fields as in Go ("RequestID"); they are renamed to
// the tag names first, so a spool left by an older build still delivers.
func decodeUsage(payload []byte, u *Usage) error {
	if !bytes.Contains(payload, []byte(`"RequestID"`)) {
		return json.Unmarshal(payload, u)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(payload, &fields); err != nil {
		return err
	}
	if _, legacy := fields["RequestID"]; legacy {
		renamed := make(map[string]json.RawMessage, len(fields))
		t := reflect.TypeFor[Usage]()
		for i := range t.NumField() {
			f := t.Field(i)
			if v, ok := fields[f.Name]; ok {
				name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
				renamed[name] = v
			}
		}
		var err error
		if payload, err = json.Marshal(renamed); err != nil {
			return err
		}
	}
	return json.Unmarshal(payload, u)
}
