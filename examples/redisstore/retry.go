package redisstore

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

// Bounds of the background release retries.
const (
	maxPendingReleases = 10000 // past it the oldest are left to expire
	retryFirst         = 100 * time.Millisecond
	retryMax           = 2 * time.Second
)

// pending is a release (or the cleanup of an acquire with an unknown
// outcome) to retry until its deadline.
type pending struct {
	key   string
	n     names
	id    string
	until time.Time
}

// retryRelease queues the removal of lease id from Redis, retried in the
// background until ReleaseRetry has passed. A closed Limiter drops it: the
// lease expires.
func (l *Limiter) retryRelease(key string, n names, id string) {
	l.retryMu.Lock()
	defer l.retryMu.Unlock()
	// wg.Add under l.mu, which Close takes to set closed before it waits.
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	if len(l.retries) >= maxPendingReleases {
		l.retries = l.retries[1:]
	}
	l.retries = append(l.retries, pending{key: key, n: n, id: id, until: time.Now().Add(l.retryFor)})
	if !l.retrying {
		l.retrying = true
		l.wg.Add(1)
		go l.retryLoop()
	}
}

func (l *Limiter) retryLoop() {
	defer l.wg.Done()
	delay := retryFirst
	t := time.NewTimer(delay)
	defer t.Stop()
	for {
		select {
		case <-l.done:
			l.retryMu.Lock()
			n := len(l.retries)
			l.retries, l.retrying = nil, false
			l.retryMu.Unlock()
			if n > 0 {
				l.log.Warn("redisstore: closed with slot releases still failing; those slots expire within the lease TTL",
					"slots", n, "lease_ttl", l.ttl)
			}
			return
		case <-t.C:
		}
		l.retryMu.Lock()
		batch := l.retries
		l.retries = nil
		l.retryMu.Unlock()

		keep, dropped := l.retryBatch(batch)
		if dropped > 0 {
			l.log.Warn("redisstore: gave up releasing slots in Redis; they expire within the lease TTL",
				"slots", dropped, "lease_ttl", l.ttl)
		}
		l.retryMu.Lock()
		l.retries = append(keep, l.retries...)
		if len(l.retries) == 0 {
			l.retrying = false
			l.retryMu.Unlock()
			return
		}
		l.retryMu.Unlock()
		if len(keep) > 0 {
			delay = min(2*delay, retryMax)
		} else {
			delay = retryFirst
		}
		t.Reset(delay)
	}
}

// retryBatch tries every pending release in one pipeline and returns those
// to try again, and how many passed their deadline.
func (l *Limiter) retryBatch(batch []pending) (keep []pending, dropped int) {
	ctx, cancel := context.WithTimeout(context.Background(), l.timeout)
	defer cancel()
	failAll := func(err error) ([]pending, int) {
		now := time.Now()
		for _, p := range batch {
			if now.Before(p.until) {
				keep = append(keep, p)
			} else {
				dropped++
			}
		}
		l.outage.failed("release", batch[0].key, err)
		return keep, dropped
	}
	if err := releaseScript.Load(ctx, l.c).Err(); err != nil {
		return failAll(err)
	}
	pipe := l.c.Pipeline()
	cmds := make([]*redis.Cmd, len(batch))
	for i, p := range batch {
		cmds[i] = releaseScript.EvalSha(ctx, pipe, []string{p.n.leases, p.n.queue}, p.id, p.n.channel)
	}
	// Each command carries its own error; Exec's is the first of them.
	_, _ = pipe.Exec(ctx)
	now := time.Now()
	var lastErr error
	for i, p := range batch {
		if err := cmds[i].Err(); err != nil {
			lastErr = err
			if now.Before(p.until) {
				keep = append(keep, p)
			} else {
				dropped++
			}
		}
	}
	if lastErr != nil {
		l.outage.failed("release", batch[0].key, lastErr)
	} else {
		l.outage.ok()
	}
	return keep, dropped
}
