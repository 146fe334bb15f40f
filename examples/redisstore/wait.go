package redisstore

import (
	"context"

	"github.com/redis/go-redis/v9"
)

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
