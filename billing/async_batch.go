package billing

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// Batches: an Async over a BatchSink delivers the records queued together
// in one call. A worker parked on the queue is woken by the record sent to
// it: with a worker per record, every record wakes a goroutine (and a
// thread, from the turn's goroutine), and behind a sink that batches by
// itself every commit wakes a crowd of workers. Here one worker at a time
// gathers: the batch's first record wakes it, it sleeps on a timer while
// the next records queue without waking anyone, then takes them all.

// workBatches is a worker of an Async over a BatchSink: it takes its turn
// to gather a batch, then delivers it while the next worker gathers.
func (a *Async) workBatches() {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	buf := make([]Usage, 0, min(a.o.MaxBatch, a.o.QueueSize+1))
	for {
		a.gather.Lock()
		batch, open := a.gatherBatch(buf[:0], timer)
		a.gather.Unlock()
		if len(batch) > 0 {
			a.deliverBatch(batch)
		}
		clear(batch) // let the records' strings go
		if !open {
			return
		}
	}
}

// gatherBatch waits for a first record, then for BatchWait or a full
// batch, and appends the records queued by then, up to MaxBatch. open is
// false once the queue is closed and empty.
func (a *Async) gatherBatch(batch []Usage, timer *time.Timer) (_ []Usage, open bool) {
	u, ok := <-a.queue
	if !ok {
		return batch, false
	}
	batch = append(batch, u)
	if a.o.BatchWait > 0 && len(batch) < a.o.MaxBatch {
		a.waitBatch(timer)
	}
	for len(batch) < a.o.MaxBatch {
		select {
		case u, ok := <-a.queue:
			if !ok {
				return batch, false
			}
			batch = append(batch, u)
		default:
			return batch, true
		}
	}
	return batch, true
}

// waitBatch sleeps until BatchWait passed, the queue holds the rest of a
// full batch, or Close began (which drains without waits).
func (a *Async) waitBatch(timer *time.Timer) {
	select {
	case <-a.full: // left from an earlier batch: the queue is read below
	default:
	}
	if len(a.queue) >= a.fullAt {
		return
	}
	if a.onBatchWait != nil {
		a.onBatchWait()
	}
	timer.Reset(a.o.BatchWait)
	select {
	case <-timer.C:
	case <-a.full:
	case <-a.closing:
	}
	timer.Stop()
}

// queued is called after each record put into the queue: it ends a
// batch's wait once the batch would be full. A non-blocking send to a full
// channel takes no lock, so this is cheap while a batch waits.
func (a *Async) queued() {
	if a.full != nil && len(a.queue) >= a.fullAt {
		notify(a.full)
	}
}

// deliverBatch tries batch with RecordBatch, with retries, and when that
// fails for good delivers its records one by one, each with its own
// retries and drop.
func (a *Async) deliverBatch(batch []Usage) {
	var err error
	attempts := 0
	for a.runCtx.Err() == nil {
		attempts++
		var panicked bool
		if panicked, err = attemptBatchOnce(a.runCtx, a.batch, a.o.AttemptTimeout, batch); err == nil {
			return
		}
		if panicked || attempts > a.o.MaxRetries || !a.pause(a.backoff(attempts)) {
			break
		}
	}
	if a.runCtx.Err() != nil {
		cause := context.Cause(a.runCtx)
		if err != nil {
			cause = fmt.Errorf("%w; last attempt: %w", cause, err)
		}
		for _, u := range batch {
			a.drop(u, cause, attempts)
		}
		return
	}
	a.logger().LogAttrs(context.Background(), slog.LevelWarn,
		"billing: usage batch failed; delivering its records one by one",
		slog.Int("records", len(batch)), slog.Int("attempts", attempts), slog.Any("error", err))
	for _, u := range batch {
		if a.runCtx.Err() != nil {
			a.drop(u, context.Cause(a.runCtx), 0)
			continue
		}
		_ = a.deliver(a.runCtx, u)
	}
}

func (a *Async) logger() *slog.Logger {
	if a.o.Logger != nil {
		return a.o.Logger
	}
	return slog.Default()
}
