package billing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/relaykit/responsesrelay/internal/fastpath"
	"github.com/relaykit/responsesrelay/internal/hookcall"
	"github.com/relaykit/responsesrelay/internal/knob"
)

// Defaults of DeliveryOptions for an Async.
const (
	defaultAsyncWorkers        = 4
	defaultAsyncQueueSize      = 1024
	defaultAsyncEnqueueTimeout = time.Second
	defaultAsyncAttemptTimeout = 10 * time.Second
	defaultAsyncMaxRetries     = 5
	defaultAsyncRetryBase      = 100 * time.Millisecond
	defaultAsyncRetryMax       = 5 * time.Second
	defaultAsyncMaxBatch       = 128
	defaultAsyncBatchWait      = 5 * time.Millisecond
)

// ErrDropped is wrapped by the error Record returns when it delivered a
// record itself and every attempt failed. OnDropped and the log have
// already seen the record by then.
var ErrDropped = errors.New("billing: usage record dropped")

// Async is a UsageSink that delivers records to another sink from a pool
// of workers, so that a slow database never delays the end of a turn. It
// never drops a record silently:
//
//   - Records wait in a bounded queue (QueueSize) for Workers workers.
//   - When the queue is full, Record waits for room up to EnqueueTimeout
//     and then delivers the record itself, in the caller's goroutine: a
//     slow sink slows the callers down instead of losing records.
//   - A failed delivery is retried MaxRetries times with exponential
//     backoff from RetryBase to RetryMax, each wait jittered so that
//     workers do not retry in step.
//   - A record whose retries ran out goes to OnDropped and to an error log
//     line carrying the whole record as JSON, for an operator to replay.
//   - Close(ctx) stops queueing and drains the queue; what is still queued
//     when ctx ends goes to OnDropped and the log.
//
// When the sink is a BatchSink, the workers deliver batches instead: one
// at a time gathers the records queued within BatchWait, up to MaxBatch,
// and stores them with one RecordBatch call, retried as a record is. So a
// queued record wakes no goroutine of its own, and a database pays one
// transaction per batch. A batch that still fails, or panics, is
// delivered again record by record through Record, each with its own
// retries and drop, so that one record the sink refuses costs no other.
//
// The queue lives in memory: records queued when the process dies are
// lost. Put a Spool in front of the sink when that matters.
//
// Create one with NewAsync and Close it on shutdown. The sink must be safe
// for concurrent use; it should be idempotent by Usage.RequestID, since a
// retry may repeat a write that had in fact succeeded.
type Async struct {
	sink  UsageSink
	o     DeliveryOptions
	queue chan Usage

	// With a BatchSink (batch != nil): gather is held by the worker
	// gathering the next batch, and full (cap 1; nil when batches do not
	// wait) tells it that the queue holds fullAt records, the rest of a
	// full batch.
	batch  BatchSink
	gather sync.Mutex
	full   chan struct{}
	fullAt int

	onBatchWait func() // tests: a gathering worker starts its wait

	// mu orders Record's sends against Close: after closed is set, no
	// send to queue starts.
	mu      sync.RWMutex
	closed  bool
	closing chan struct{} // closed by Close: Records stop waiting for room
	senders sync.WaitGroup

	// runCtx is the workers' context. Close cancels it, with the cause
	// handed to OnDropped, when its own ctx ends before the queue drained.
	runCtx    context.Context
	abort     context.CancelCauseFunc
	closeOnce sync.Once
	done      chan struct{} // closed when every worker has returned
}

// NewAsync starts o.Workers workers delivering to sink. It panics when sink
// is nil, a wiring mistake better found at startup than at the first turn.
func NewAsync(sink UsageSink, o DeliveryOptions) *Async {
	if sink == nil {
		panic("billing: NewAsync with a nil sink")
	}
	o = o.forAsync()
	a := &Async{
		sink:    sink,
		o:       o,
		queue:   make(chan Usage, o.QueueSize),
		closing: make(chan struct{}),
		done:    make(chan struct{}),
	}
	a.runCtx, a.abort = context.WithCancelCause(context.Background())
	work := a.work
	if bs, ok := sink.(BatchSink); ok && o.MaxBatch > 0 {
		a.batch, work = bs, a.workBatches
		if o.MaxBatch > 1 && o.BatchWait > 0 {
			a.full, a.fullAt = make(chan struct{}, 1), min(o.MaxBatch-1, o.QueueSize)
		}
	}
	var workers sync.WaitGroup
	for range o.Workers {
		workers.Go(work)
	}
	go func() {
		workers.Wait()
		close(a.done)
	}()
	return a
}

func (o DeliveryOptions) forAsync() DeliveryOptions {
	o.Workers = knob.Positive("billing.DeliveryOptions.Workers", o.Workers, defaultAsyncWorkers)
	o.QueueSize = knob.Positive("billing.DeliveryOptions.QueueSize", o.QueueSize, defaultAsyncQueueSize)
	if o.EnqueueTimeout == 0 {
		o.EnqueueTimeout = defaultAsyncEnqueueTimeout
	}
	if o.AttemptTimeout == 0 {
		o.AttemptTimeout = defaultAsyncAttemptTimeout
	}
	switch {
	case o.MaxRetries == 0:
		o.MaxRetries = defaultAsyncMaxRetries
	case o.MaxRetries < 0:
		o.MaxRetries = 0
	}
	o.RetryBase, o.RetryMax = retryWaits(o.RetryBase, o.RetryMax)
	o.MaxBatch = knob.Or(o.MaxBatch, defaultAsyncMaxBatch)
	if o.BatchWait == 0 {
		o.BatchWait = defaultAsyncBatchWait
	}
	return o
}

// Record queues u for delivery and returns nil. ctx bounds only the wait
// for room in a full queue: when EnqueueTimeout passes or ctx ends first,
// Record delivers u itself, with retries, and returns nil or an error
// wrapping ErrDropped. Deliveries never use ctx's cancellation, only its
// values.
//
// After Close, Record always delivers synchronously, so that a record
// produced during shutdown is not lost.
func (a *Async) Record(ctx context.Context, u Usage) error {
	a.mu.RLock()
	if a.closed {
		a.mu.RUnlock()
		return a.deliverNow(ctx, u)
	}
	select {
	case a.queue <- u:
		a.mu.RUnlock()
		a.queued()
		return nil
	default:
	}
	a.senders.Add(1)
	a.mu.RUnlock()

	queued := false
	if a.o.EnqueueTimeout > 0 {
		t := time.NewTimer(a.o.EnqueueTimeout)
		select {
		case a.queue <- u:
			queued = true
		case <-t.C:
		case <-ctx.Done():
		case <-a.closing:
		}
		t.Stop()
	}
	a.senders.Done()
	if queued {
		a.queued()
		return nil
	}
	return a.deliverNow(ctx, u)
}

// Pending reports how many records wait in the queue.
func (a *Async) Pending() int { return len(a.queue) }

// Close stops queueing (later Records deliver synchronously), lets the
// workers drain the queue and waits for them.
//
// If ctx ends first, Close cancels the deliveries in progress and their
// retries, hands the records still queued to OnDropped and the log, and
// returns ctx.Err(). A record that a worker holds (in a delivery or a
// batch) is dropped when its sink call returns, which is at once for a
// sink that honors its context.
// Calling Close again waits again.
func (a *Async) Close(ctx context.Context) error {
	a.closeOnce.Do(func() {
		a.mu.Lock()
		a.closed = true
		close(a.closing)
		a.mu.Unlock()
		a.senders.Wait() // no send to queue can start any more
		close(a.queue)
	})
	select {
	case <-a.done:
		return nil
	case <-ctx.Done():
	}
	a.abort(fmt.Errorf("billing: Close gave up before the record was delivered: %w", ctx.Err()))
	for u := range a.queue {
		a.drop(u, context.Cause(a.runCtx), 0)
	}
	return ctx.Err()
}

func (a *Async) work() {
	for u := range a.queue {
		if a.runCtx.Err() != nil {
			a.drop(u, context.Cause(a.runCtx), 0)
			continue
		}
		_ = a.deliver(a.runCtx, u)
	}
}

func (a *Async) deliverNow(ctx context.Context, u Usage) error {
	return a.deliver(context.WithoutCancel(ctx), u)
}

// deliver tries u until it is stored, the retries run out, or Close gave
// up (which ends the waits between retries, not a call in progress unless
// ctx is the workers' context).
func (a *Async) deliver(ctx context.Context, u Usage) error {
	for attempts := 1; ; attempts++ {
		err := a.attempt(ctx, u)
		if err == nil {
			return nil
		}
		giveUp := attempts > a.o.MaxRetries
		if !giveUp && !a.pause(a.backoff(attempts)) {
			err = fmt.Errorf("%w; last attempt: %w", context.Cause(a.runCtx), err)
			giveUp = true
		}
		if giveUp {
			a.drop(u, err, attempts)
			return fmt.Errorf("%w after %d attempt(s): %w", ErrDropped, attempts, err)
		}
	}
}

func (a *Async) attempt(ctx context.Context, u Usage) error {
	return attemptOnce(ctx, a.sink, a.o.AttemptTimeout, u)
}

// attemptOnce makes one Record call to sink (callSink).
func attemptOnce(ctx context.Context, sink UsageSink, timeout time.Duration, u Usage) error {
	_, err := callSink(ctx, timeout, func(ctx context.Context) error { return sink.Record(ctx, u) })
	return err
}

// attemptBatchOnce makes one RecordBatch call to sink (callSink).
func attemptBatchOnce(ctx context.Context, sink BatchSink, timeout time.Duration, batch []Usage) (panicked bool, err error) {
	return callSink(ctx, timeout, func(ctx context.Context) error { return sink.RecordBatch(ctx, batch) })
}

// callSink is one call to a next sink, bounded by timeout when it is > 0;
// a panic in the sink is a failed attempt, and is reported (a panicking
// batch is not tried again).
func callSink(ctx context.Context, timeout time.Duration, call func(context.Context) error) (panicked bool, err error) {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	err = hookcall.Safe(ctx, call)
	if pe, ok := errors.AsType[*hookcall.PanicError](err); ok {
		return true, fmt.Errorf("billing: usage sink panicked: %v", pe.Value)
	}
	return false, err
}

// backoff is the wait after the given number of failed attempts.
func (a *Async) backoff(failed int) time.Duration {
	return jitteredBackoff(a.o.RetryBase, a.o.RetryMax, failed)
}

// jitteredBackoff is the exponential step from base, capped at limit, then
// a random point in its upper half.
func jitteredBackoff(base, limit time.Duration, failed int) time.Duration {
	d := base
	for i := 1; i < failed && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	return d/2 + rand.N(d/2+1)
}

// retryWaits fills zero or negative RetryBase and RetryMax of DeliveryOptions
// and DeliveryOptions with the defaults, and raises limit to base.
func retryWaits(base, limit time.Duration) (time.Duration, time.Duration) {
	if base <= 0 {
		base = defaultAsyncRetryBase
	}
	if limit <= 0 {
		limit = defaultAsyncRetryMax
	}
	return base, max(limit, base)
}

// pause waits d; false means Close gave up meanwhile.
func (a *Async) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-a.runCtx.Done():
		return false
	}
}

func (a *Async) drop(u Usage, err error, attempts int) {
	dropRecord(a.o.Logger, a.o.OnDropped, u, err, attempts)
}

// dropRecord writes the error line carrying the whole record, then calls
// onDropped, if any, shielded from its panics.
func dropRecord(log *slog.Logger, onDropped func(Usage, error), u Usage, err error, attempts int) {
	if log == nil {
		log = slog.Default()
	}
	rec, jerr := json.Marshal(u)
	if jerr != nil { // not expected: Usage is plain data
		rec, _ = json.Marshal(fmt.Sprintf("%+v", u))
	}
	log.LogAttrs(context.Background(), slog.LevelError, "billing: usage record dropped; replay the record from this line",
		slog.String("request_id", u.RequestID),
		slog.Int("attempts", attempts),
		slog.Any("error", err),
		slog.Any("record", json.RawMessage(rec)))
	if onDropped == nil {
		return
	}
	perr := hookcall.Safe(context.Background(), func(context.Context) error { onDropped(u, err); return nil })
	if pe, ok := errors.AsType[*hookcall.PanicError](perr); ok {
		log.LogAttrs(context.Background(), slog.LevelError, "billing: OnDropped panicked",
			slog.String("request_id", u.RequestID), slog.Any("panic", pe.Value))
	}
}

func init() { fastpath.EnqueueUsage = tryEnqueue }

// tryEnqueue is Record's first step alone: it queues u on an open Async
// with room, and never blocks or calls the sink (internal/fastpath).
func tryEnqueue(sink, usage any) bool {
	a, ok := sink.(*Async)
	if !ok {
		return false
	}
	u, ok := usage.(*Usage)
	if !ok {
		return false
	}
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.closed {
		return false
	}
	select {
	case a.queue <- *u:
		a.queued()
		return true
	default:
		return false
	}
}
