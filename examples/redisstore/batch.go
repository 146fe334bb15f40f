package redisstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/relaykit/responsesrelay/scheduler"
)

var _ scheduler.Batcher = (*Limiter)(nil)

// errNoBatch is TakeBatch's answer on a client that shards keys: the
// scheduler then takes the slots one call at a time.
var errNoBatch = errors.New("redisstore: one-step batches need a single Redis server (not a Cluster or Ring client)")

// errOutage is TakeBatch's answer while the last call to Redis failed.
var errOutage = fmt.Errorf("%w: the last call failed; taking slots one by one until one succeeds", ErrUnavailable)

// TakeBatch implements scheduler.Batcher: one script reads the sticky
// bindings, takes the extra slot (the relay's user slot) and the first
// free account slot, so a turn's slots cost one round trip, and its
// Release gives them back and writes the turn's bindings in one more.
//
// The bindings are read and written only when b.Store is a *Store on the
// same client; otherwise b.Read stays false and the scheduler uses its
// Store itself. The keys of one batch hash to different slots, so a
// Cluster or Ring client gets an error and the scheduler goes one call at
// a time. When Redis fails the error wraps ErrUnavailable and nothing is
// held (a lease the script may have written is removed in the
// background); the scheduler then takes the usual calls, which fail open
// or closed as FailOpen says.
func (l *Limiter) TakeBatch(ctx context.Context, b *scheduler.Batch) error {
	if l.isClosed() {
		return ErrClosed
	}
	if !l.batches() {
		return errNoBatch
	}
	if l.outage.down.Load() {
		// Redis failed last time: the usual calls find out whether it is
		// back (and fail open or closed), without a batch waiting for
		// Timeout first.
		return errOutage
	}
	b.Taken = -1
	st, read := b.Store.(*Store)
	read = read && st.c == l.c
	nr := 0
	if read {
		nr = len(b.Reads)
	}
	extra := b.Extra.Key != "" && b.Extra.Limit > 0
	nslots := len(b.Accounts)
	if extra {
		nslots++
	}
	slots := make([]batchSlot, 0, nslots)
	keys := make([]string, 0, nr+3*nslots)
	args := make([]any, 0, 5+nslots)
	for _, k := range b.Reads[:nr] {
		keys = append(keys, st.prefix+k)
	}
	id := l.newID()
	args = append(args, nr, 0, id, l.ttl.Milliseconds(), l.stale.Milliseconds())
	add := func(s scheduler.Slot) {
		n := l.names(s.Key)
		slots = append(slots, batchSlot{key: s.Key, n: n, limit: s.Limit})
		keys = append(keys, n.leases, n.queue, n.seen)
		args = append(args, s.Limit)
	}
	if extra {
		args[1] = 1
		add(b.Extra)
	}
	for _, s := range b.Accounts {
		add(s)
	}

	opCtx, cancel := l.op(ctx)
	res, err := batchScript.Run(opCtx, l.c, keys, args...).Slice()
	cancel()
	if err == nil && len(res) != 2+nr {
		err = errors.New("batch script: unexpected reply")
	}
	if err != nil {
		err = l.failed("batch", b.Extra.Key, err)
		if maybeSent(err) {
			for _, s := range slots {
				l.retryRelease(s.key, s.n, id)
			}
		}
		return err
	}
	l.outage.ok()

	b.Read = read
	if read {
		b.Values = make([]string, nr)
		for i := range nr {
			b.Values[i], _ = res[2+i].(string)
		}
	}
	h := &batchLeases{l: l, id: id}
	if read {
		h.store = st.prefix
	}
	first := 0
	b.ExtraTaken = res[0] == int64(1)
	if extra {
		first = 1
		if b.ExtraTaken {
			h.extra = l.hold(slots[0].key, slots[0].n, id)
		}
	}
	if i, _ := res[1].(int64); i > 0 {
		b.Taken = int(i) - 1
		if s := slots[first+b.Taken]; s.limit > 0 {
			h.account = l.hold(s.key, s.n, id)
		}
	}
	b.Release = h.release
	return nil
}

// batches reports whether one script may touch keys of different hash
// slots: on one server, not on a Cluster or a Ring.
func (l *Limiter) batches() bool {
	switch l.c.(type) {
	case *redis.ClusterClient, *redis.Ring:
		return false
	}
	return true
}

type batchSlot struct {
	key   string
	n     names
	limit int
}

// batchLeases are the leases of one batch; either may be nil (not taken,
// or unlimited).
type batchLeases struct {
	l       *Limiter
	id      string
	store   string // the Store's key prefix; "" when sets are not written
	account *lease
	extra   *lease
}

// release frees the leases asked for that are still held and writes sets,
// in one script. A lease whose removal fails is retried in the background
// (or expires); the sets are then lost, as a failed Store.Set is.
func (h *batchLeases) release(account, extra bool, sets []scheduler.StoreWrite) {
	l := h.l
	var free []*lease
	if account && h.account != nil && l.drop(h.account) {
		free = append(free, h.account)
	}
	if extra && h.extra != nil && l.drop(h.extra) {
		free = append(free, h.extra)
	}
	if h.store == "" {
		sets = nil
	}
	if len(free) == 0 && len(sets) == 0 {
		return
	}
	keys := make([]string, 0, 2*len(free)+len(sets))
	args := make([]any, 0, 2+len(free)+2*len(sets))
	args = append(args, h.id, len(free))
	for _, ls := range free {
		keys = append(keys, ls.n.leases, ls.n.queue)
		args = append(args, ls.n.channel)
	}
	for _, w := range sets {
		keys = append(keys, h.store+w.Key)
		ms := int64(0) // no expiry
		if w.TTL > 0 { // rounded up, as Store.Set does
			ms = int64(max(1, (w.TTL+time.Millisecond-1)/time.Millisecond))
		}
		args = append(args, w.Value, ms)
	}
	ctx, cancel := l.op(context.Background())
	err := releaseBatchScript.Run(ctx, l.c, keys, args...).Err()
	cancel()
	if err == nil {
		l.outage.ok()
		return
	}
	l.outage.failed("release", "batch", err)
	for _, ls := range free {
		l.retryRelease(ls.key, ls.n, ls.id)
	}
	if len(sets) > 0 {
		l.log.Warn("redisstore: writing sticky bindings failed", "error", err)
	}
}

// drop marks a lease released in this process; false when it was already.
func (l *Limiter) drop(ls *lease) bool {
	if !ls.done.CompareAndSwap(false, true) {
		return false
	}
	l.mu.Lock()
	if ks := l.keys[ls.key]; ks != nil {
		delete(ks.leases, ls)
		l.forgetIfIdle(ls.key, ks)
	}
	l.mu.Unlock()
	return true
}
