package redisstore

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/relaykit/responsesrelay/concurrency"
)

// Defaults for the zero fields of concurrency.WaitOptions, the same as
// concurrency.Acquire's.
const (
	defaultMaxWaiters  = 100
	defaultWaitTimeout = 30 * time.Second
)

// waiter is a caller parked in Acquire.
type waiter struct {
	wake chan struct{} // buffered 1: a pending wake-up is never lost
}

// Acquire waits for a slot for key (see concurrency.Waiter). It returns
// ErrQueueFull at once when o.MaxWaiters callers, on all instances, already
// wait for key; concurrency.ErrWaitTimeout after o.Timeout; ctx.Err() when
// ctx ends; ErrClosed when the Limiter is closed meanwhile; and an error
// wrapping ErrUnavailable when Redis fails (unless FailOpen, which then
// grants a local slot as TryAcquire does, or keeps waiting for one).
//
// A zero field of o takes the defaults of concurrency.Acquire: 100 waiters,
// 30 s. A negative MaxWaiters queues nobody (a full key is ErrQueueFull at
// once); a negative Timeout waits until ctx ends.
func (l *Limiter) Acquire(ctx context.Context, key string, limit int, o concurrency.WaitOptions) (release func(), err error) {
	if limit <= 0 {
		return noop, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if l.isClosed() {
		return nil, ErrClosed
	}
	maxWaiters, timeout := o.MaxWaiters, o.Timeout
	if maxWaiters == 0 {
		maxWaiters = defaultMaxWaiters
	}
	if timeout == 0 {
		timeout = defaultWaitTimeout
	}
	var expired <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	n := l.names(key)
	// The lease id doubles as the ticket until an attempt fails: the
	// lease id of a failed attempt is removed in the background, so the
	// next attempt needs a new one.
	ticket := l.newID()
	id := ticket
	res, err := l.acquire(ctx, n, id, limit, ticket, max(maxWaiters, 0))
	switch {
	case err == nil && res == resGranted:
		return l.hold(key, n, id).release, nil
	case err == nil && res == resFull:
		return nil, concurrency.ErrQueueFull
	case err != nil:
		err = l.failed("acquire", key, err)
		l.forget(key, n, id, err)
		if !l.failOpen {
			return nil, err
		}
		if ls := l.grantLocal(key, n, limit); ls != nil {
			return ls.release, nil
		}
		id = l.newID()
	}

	w := &waiter{wake: make(chan struct{}, 1)}
	l.join(key, n, w)
	defer l.leave(key, w)
	// Check once more: a release published before the subscription took
	// effect was missed.
	w.wake <- struct{}{}
	poll := time.NewTicker(l.poll)
	defer poll.Stop()
	for {
		select {
		case <-w.wake:
		case <-poll.C:
		case <-ctx.Done():
			l.giveUp(ctx, n, ticket)
			return nil, ctx.Err()
		case <-expired:
			l.giveUp(ctx, n, ticket)
			return nil, concurrency.ErrWaitTimeout
		case <-l.done:
			l.giveUp(ctx, n, ticket)
			return nil, ErrClosed
		}
		res, err := l.acquire(ctx, n, id, limit, ticket, -1)
		if err != nil {
			err = l.failed("acquire", key, err)
			l.forget(key, n, id, err)
			id = l.newID()
			if !l.failOpen {
				l.giveUp(ctx, n, ticket)
				return nil, err
			}
			if ls := l.grantLocal(key, n, limit); ls != nil {
				l.giveUp(ctx, n, ticket)
				return ls.release, nil
			}
			continue
		}
		if res == resGranted {
			return l.hold(key, n, id).release, nil
		}
	}
}

// giveUp removes a waiter's ticket, best effort: a ticket left behind goes
// stale and is dropped by the next caller after 8 poll intervals.
func (l *Limiter) giveUp(ctx context.Context, n names, ticket string) {
	ctx, cancel := l.op(ctx)
	defer cancel()
	if err := leaveScript.Run(ctx, l.c, []string{n.queue, n.seen}, ticket, n.channel).Err(); err != nil {
		l.log.Debug("redisstore: removing a waiter's ticket failed; it will go stale", "error", err)
	}
}

// join registers a waiter for key; the first one subscribes this process
// to the key's wake-up channel.
func (l *Limiter) join(key string, n names, w *waiter) {
	l.mu.Lock()
	ks := l.state(key, n)
	if ks.waiters == nil {
		ks.waiters = make(map[*waiter]struct{})
	}
	ks.waiters[w] = struct{}{}
	first := len(ks.waiters) == 1
	l.mu.Unlock()
	if first {
		l.syncSubscription(key)
	}
}

// leave unregisters a waiter; the last one unsubscribes.
func (l *Limiter) leave(key string, w *waiter) {
	l.mu.Lock()
	last := false
	if ks := l.keys[key]; ks != nil {
		delete(ks.waiters, w)
		last = len(ks.waiters) == 0
		l.forgetIfIdle(key, ks)
	}
	l.mu.Unlock()
	if last {
		l.syncSubscription(key)
	}
}

// syncSubscription (un)subscribes key's channel so that this process is
// subscribed exactly while it has waiters for key. Joins and leaves race;
// reading the wanted state under subMu makes the last call win.
//
// go-redis remembers the channels and subscribes again after a reconnect,
// so an error here only means waiters poll until then.
func (l *Limiter) syncSubscription(key string) {
	l.subMu.Lock()
	defer l.subMu.Unlock()
	if l.isClosed() {
		return
	}
	l.mu.Lock()
	ks := l.keys[key]
	want := ks != nil && len(ks.waiters) > 0
	l.mu.Unlock()
	if want == l.subscribed[key] {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.timeout)
	defer cancel()
	ch := l.names(key).channel
	if !want {
		delete(l.subscribed, key)
		if err := l.ps.Unsubscribe(ctx, ch); err != nil {
			l.log.Debug("redisstore: unsubscribing from wake-ups failed", "key", key, "error", err)
		}
		return
	}
	if l.ps == nil {
		// One connection per Limiter, opened when somebody first waits.
		l.ps = l.c.Subscribe(ctx)
		msgs := l.ps.Channel()
		l.wg.Add(1)
		go l.dispatch(msgs)
	}
	l.subscribed[key] = true
	if err := l.ps.Subscribe(ctx, ch); err != nil {
		l.log.Debug("redisstore: subscribing to wake-ups failed; waiters poll", "key", key, "error", err)
	}
}

// keyOfChannel inverts names(key).channel.
func (l *Limiter) keyOfChannel(ch string) (string, bool) {
	pre, suf := l.prefix+"slot:{", "}:free"
	if len(ch) < len(pre)+len(suf) || ch[:len(pre)] != pre || ch[len(ch)-len(suf):] != suf {
		return "", false
	}
	return ch[len(pre) : len(ch)-len(suf)], true
}

// dispatch wakes the local waiters of the key named by each message. Every
// waiter then asks Redis; only those whose turn has come get a slot.
func (l *Limiter) dispatch(msgs <-chan *redis.Message) {
	defer l.wg.Done()
	for m := range msgs {
		key, ok := l.keyOfChannel(m.Channel)
		if !ok {
			continue
		}
		l.mu.Lock()
		if ks := l.keys[key]; ks != nil {
			for w := range ks.waiters {
				select {
				case w.wake <- struct{}{}:
				default:
				}
			}
		}
		l.mu.Unlock()
	}
}
