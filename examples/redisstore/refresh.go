package redisstore

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

// refreshBatch caps the lease ids sent in one script call.
const refreshBatch = 256

// refresher pushes the expiry of every lease this Limiter holds forward,
// every RefreshInterval, in one pipeline: one goroutine however many
// streams are open.
func (l *Limiter) refresher() {
	defer l.wg.Done()
	t := time.NewTicker(l.refresh)
	defer t.Stop()
	for {
		select {
		case <-l.done:
			return
		case <-t.C:
			l.refreshAll()
		}
	}
}

type refreshCall struct {
	key string
	ids []string
	cmd *redis.Cmd
}

func (l *Limiter) refreshAll() {
	var calls []refreshCall
	l.mu.Lock()
	for key, ks := range l.keys {
		var ids []string
		for ls := range ks.leases {
			if ls.lost.Load() {
				continue
			}
			ids = append(ids, ls.id)
			if len(ids) == refreshBatch {
				calls = append(calls, refreshCall{key: key, ids: ids})
				ids = nil
			}
		}
		if len(ids) > 0 {
			calls = append(calls, refreshCall{key: key, ids: ids})
		}
	}
	l.mu.Unlock()
	if len(calls) == 0 {
		return
	}

	ctx, cancel := context.WithTimeout(context.Background(), l.timeout)
	defer cancel()
	err := l.runRefresh(ctx, calls)
	if isNoScript(err) {
		// Redis restarted or flushed its script cache.
		if err = refreshScript.Load(ctx, l.c).Err(); err == nil {
			err = l.runRefresh(ctx, calls)
		}
	}
	if err != nil {
		l.outage.failed("refresh", calls[0].key, err)
		return
	}
	l.outage.ok()
	for _, c := range calls {
		lost, err := c.cmd.StringSlice()
		if err != nil || len(lost) == 0 {
			continue
		}
		l.markLost(c.key, lost)
	}
}

func (l *Limiter) runRefresh(ctx context.Context, calls []refreshCall) error {
	ttl := l.ttl.Milliseconds()
	pipe := l.c.Pipeline()
	for i := range calls {
		c := &calls[i]
		args := make([]any, 0, 1+len(c.ids))
		args = append(args, ttl)
		for _, id := range c.ids {
			args = append(args, id)
		}
		c.cmd = refreshScript.EvalSha(ctx, pipe, []string{l.names(c.key).leases}, args...)
	}
	_, err := pipe.Exec(ctx)
	if errors.Is(err, redis.Nil) {
		err = nil
	}
	return err
}

func isNoScript(err error) bool {
	return errors.Is(err, redis.ErrNoScript) || redis.HasErrorPrefix(err, "NOSCRIPT")
}

// markLost flags leases that expired in Redis while their turn still runs
// (an outage longer than LeaseTTL). Their turns go on but no longer count
// against the limit; releasing them is harmless.
func (l *Limiter) markLost(key string, ids []string) {
	lost := make(map[string]bool, len(ids))
	for _, id := range ids {
		lost[id] = true
	}
	n := 0
	l.mu.Lock()
	if ks := l.keys[key]; ks != nil {
		for ls := range ks.leases {
			if lost[ls.id] && !ls.lost.Swap(true) {
				n++
			}
		}
	}
	l.mu.Unlock()
	if n > 0 {
		l.log.Warn("redisstore: slots expired in Redis while still held; their turns no longer count against the limit",
			"key", key, "slots", n, "lease_ttl", l.ttl)
	}
}
