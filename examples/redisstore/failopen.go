package redisstore

import (
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// failed logs a Redis failure and wraps it.
func (l *Limiter) failed(op, key string, err error) error {
	l.outage.failed(op, key, err)
	return fmt.Errorf("%w: %s %q: %w", ErrUnavailable, op, key, err)
}

// grantLocal takes a fail-open slot when this process holds fewer than
// limit for key.
func (l *Limiter) grantLocal(key string, n names, limit int) *lease {
	l.mu.Lock()
	defer l.mu.Unlock()
	ks := l.state(key, n)
	if len(ks.leases)+ks.local >= limit {
		l.forgetIfIdle(key, ks)
		return nil
	}
	ks.local++
	return &lease{l: l, key: key, local: true}
}

// outageLog logs Redis failures at most once per outageLogEvery while they
// last, and the first success after them.
type outageLog struct {
	log      *slog.Logger
	failOpen bool
	down     atomic.Bool

	mu         sync.Mutex
	last       time.Time
	suppressed int
}

const outageLogEvery = 10 * time.Second

func (o *outageLog) failed(op, key string, err error) {
	o.down.Store(true)
	o.mu.Lock()
	now := time.Now()
	if !o.last.IsZero() && now.Sub(o.last) < outageLogEvery {
		o.suppressed++
		o.mu.Unlock()
		return
	}
	n := o.suppressed
	o.last, o.suppressed = now, 0
	o.mu.Unlock()
	mode := "failing closed: turns get 503"
	if o.failOpen {
		mode = "failing open: slots are counted in this process only"
	}
	o.log.Error("redisstore: Redis unavailable, "+mode, "op", op, "key", key, "error", err, "similar_errors_not_logged", n)
}

func (o *outageLog) ok() {
	if !o.down.Load() || !o.down.CompareAndSwap(true, false) {
		return
	}
	o.mu.Lock()
	n := o.suppressed
	o.last, o.suppressed = time.Time{}, 0
	o.mu.Unlock()
	o.log.Info("redisstore: Redis reachable again", "similar_errors_not_logged", n)
}
