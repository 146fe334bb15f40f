package billing

import (
	"fmt"
	"log/slog"
	"os"
	"slices"
	"time"
)

// Group commit: one goroutine writes and fsyncs what concurrent Records
// appended, then rotates segments and deletes fully acknowledged ones.

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
	if cap(g.buf) <= 4*s.o.commitBytes {
		*spare = g.buf
	}
}

// write appends a group to the active segment and syncs it.
func (s *Spool) write(buf []byte, n int) error {
	seg := s.active
	if seg != nil && seg.written > segHeader && seg.written+int64(len(buf)) > s.o.segmentBytes {
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
	s.countSync()
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
	s.countSync()
	return f.Sync()
}

// maybeDelete removes a sealed segment whose records are all acknowledged.
// s.mu is held.
func (s *Spool) maybeDelete(seg *segment) {
	if !seg.sealed || seg.unacked > 0 || seg.keep || seg.deleted || s.crashed() {
		return
	}
	seg.deleted = true
	seg.ack.Close()
	if err := removeSegment(s.path(segName(seg.id)), s.path(ackName(seg.id))); err != nil {
		s.logger().Warn("billing: spool: cannot delete a delivered segment", slog.Any("error", err))
	}
	s.segs = slices.DeleteFunc(s.segs, func(x *segment) bool { return x == seg })
}
