package redisstore

import (
	"context"
	"errors"
	"net"

	"github.com/redis/go-redis/v9"
)

// TryAcquire takes a slot for key when Redis holds fewer than limit leases
// for it and nobody waits in Acquire. A limit <= 0 always succeeds without
// asking Redis. When Redis fails, the error wraps ErrUnavailable; with
// FailOpen a local slot is granted instead when this process holds fewer
// than limit for key.
//
// ctx's cancellation does not interrupt the Redis call (Timeout bounds it),
// so a granted lease is never lost on the way.
func (l *Limiter) TryAcquire(ctx context.Context, key string, limit int) (release func(), ok bool, err error) {
	if limit <= 0 {
		return noop, true, nil
	}
	if l.isClosed() {
		return nil, false, ErrClosed
	}
	n := l.names(key)
	id := l.newID()
	res, err := l.acquire(ctx, n, id, limit, "", 0)
	if err != nil {
		err = l.failed("acquire", key, err)
		l.forget(key, n, id, err)
		if l.failOpen {
			if ls := l.grantLocal(key, n, limit); ls != nil {
				return ls.release, true, nil
			}
			return nil, false, nil
		}
		return nil, false, err
	}
	if res != resGranted {
		return nil, false, nil
	}
	return l.hold(key, n, id).release, true, nil
}

// acquire runs acquireScript.
func (l *Limiter) acquire(ctx context.Context, n names, id string, limit int, ticket string, maxWaiters int) (int64, error) {
	ctx, cancel := l.op(ctx)
	defer cancel()
	res, err := acquireScript.Run(ctx, l.c, []string{n.leases, n.queue, n.seen},
		id, limit, l.ttl.Milliseconds(), ticket, maxWaiters, l.stale.Milliseconds(), n.channel).Int64()
	if err == nil {
		l.outage.ok()
	}
	return res, err
}

// hold records a lease granted in Redis, for refreshing.
func (l *Limiter) hold(key string, n names, id string) *lease {
	ls := &lease{l: l, key: key, n: n, id: id}
	l.mu.Lock()
	ks := l.state(key, n)
	if ks.leases == nil {
		ks.leases = make(map[*lease]struct{})
	}
	ks.leases[ls] = struct{}{}
	l.mu.Unlock()
	return ls
}

// release gives a slot back once. The local count drops at once; the lease
// leaves Redis now, or in the background when Redis fails, or expires.
func (l *Limiter) release(ls *lease) {
	if !ls.done.CompareAndSwap(false, true) {
		return
	}
	l.mu.Lock()
	ks := l.keys[ls.key]
	if ks != nil {
		if ls.local {
			ks.local--
		} else {
			delete(ks.leases, ls)
		}
		l.forgetIfIdle(ls.key, ks)
	}
	l.mu.Unlock()
	if ls.local {
		return
	}
	if err := l.releaseOnce(context.Background(), ls.n, ls.id); err != nil {
		l.outage.failed("release", ls.key, err)
		l.retryRelease(ls.key, ls.n, ls.id)
	}
}

func (l *Limiter) releaseOnce(ctx context.Context, n names, id string) error {
	ctx, cancel := l.op(ctx)
	defer cancel()
	err := releaseScript.Run(ctx, l.c, []string{n.leases, n.queue}, id, n.channel).Err()
	if err == nil {
		l.outage.ok()
	}
	return err
}

// forget removes, in the background, the lease of an acquire that failed
// after the script may have run (a timeout, a connection cut mid-reply).
func (l *Limiter) forget(key string, n names, id string, err error) {
	if maybeSent(err) {
		l.retryRelease(key, n, id)
	}
}

// maybeSent reports whether a command that failed with err may still have
// run in Redis.
func maybeSent(err error) bool {
	var op *net.OpError
	var rerr redis.Error
	switch {
	case errors.As(err, &op) && op.Op == "dial",
		errors.Is(err, redis.ErrClosed),
		errors.Is(err, redis.ErrPoolTimeout),
		errors.As(err, &rerr): // Redis answered: the script failed before writing
		return false
	}
	return true
}
