package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relaykit/responsesrelay/concurrency"
	"github.com/relaykit/responsesrelay/internal/knob"
)

// Defaults for the zero fields of a Scheduler; the field docs carry them.
const (
	defaultStickyTTL    = time.Hour
	defaultTopK         = 7
	defaultMaxWaiters   = 100
	defaultWaitTimeout  = 30 * time.Second
	defaultEventTimeout = 10 * time.Second
)

// Scheduler chooses accounts for turns and tracks their health.
//
// The zero Scheduler is usable once Pool is set: a zero field takes its
// default, a negative one turns the behaviour off where the field says so
// (and panics at first use where it says that). Set the fields before the
// first call and do not change them afterwards. A Scheduler is safe for
// concurrent use and must not be copied after first use.
type Scheduler struct {
	// Pool lists the accounts of a group. Required.
	Pool Pool

	// Store holds sticky bindings. nil: an in-memory store private to this
	// Scheduler that holds at most 2^20 keys and past that forgets those
	// written longest ago. One response binding per turn kept for the
	// default OwnerTTL fills it at 0.4 turns a second; past that, the
	// owners of the oldest responses are forgotten early (see OwnerTTL):
	// use a shared Store sized for the owner TTL, or a shorter OwnerTTL.
	Store Store

	// Limiter holds account slots under the key "account:"+Account.ID with
	// limit Account.Concurrency. nil: concurrency.NewMemory(). Share one
	// limiter between processes (e.g. Redis) to enforce the limit across
	// them. A Limiter that is also a Batcher serves TrySelect.
	Limiter concurrency.SlotLimiter

	// SlotLinger is how long an account slot that TrySelect took from a
	// Batcher, with no other slot (the relay's user slot), stays held by
	// this Scheduler after its turn (linger.go). A later TrySelect with no
	// other slot takes it without a round trip when its account is as
	// good a choice as the balanced order's first, or, for a continuation
	// bound to that account, after one step that reads the bindings and
	// takes no slot. Meanwhile the slot counts as busy for the other instances,
	// and a waiter queued in the Limiter may be overtaken by a turn here;
	// so fewer than half of an account's slots are kept, and none of an
	// account with one or two. ReleaseLingering gives the slots back at
	// once. 0 or negative: a slot is given back with its turn.
	SlotLinger time.Duration

	// StickyTTL is how long a previous_response_id or session binding
	// steers turns to its account after Bind. 0: 1 h; negative panics at
	// first use.
	StickyTTL time.Duration

	// OwnerTTL is how long the API key that created a response is
	// remembered after Bind, so that Select refuses the response's id to
	// other keys (ErrResponseNotOwned) after stickiness ended too. Each
	// response binding is kept in the Store this long. 0: 30 days (as
	// long as the upstream keeps a stored response); negative: off, the
	// owner is kept only as long as the stickiness (as with any value below
	// StickyTTL). Once the record is gone (expired, evicted from a full
	// in-memory Store, or the Store failing) the turn is not refused: it
	// goes where Select sends it, and the upstream answers for itself.
	OwnerTTL time.Duration

	// TopK is how many of the best-scored accounts Select tries before it
	// waits or gives up. 0: 7; negative panics at first use.
	TopK int

	// AccountWait bounds the wait for a slot when every candidate is full
	// and Request.Wait is set. MaxWaiters 0: 100 per account; negative:
	// no waiting. Timeout 0: 30 s; negative: until the request's context
	// ends.
	AccountWait concurrency.WaitOptions

	// Health sets how long failures bench an account (the cap on every
	// cooldown included) and when a sticky account is left for another.
	// The zero HealthPolicy is the default.
	Health HealthPolicy

	// OnAccountEvent, if set, is told about every change in an account's
	// health: a cooldown starting or growing, or the account recovering.
	// Observe and Recover call it after the health state is updated and
	// wait for it at most EventTimeout; ctx ends then. Events are rare
	// (one per cooldown, not one per failure), so Observe costs nothing
	// extra without one. It should return quickly: a hook that does not
	// is abandoned and logged, and the caller (a turn, in the relay) goes
	// on. A panic in it is recovered and logged.
	OnAccountEvent func(ctx context.Context, e AccountEvent)

	// EventTimeout bounds the wait for one OnAccountEvent call. 0: 10 s;
	// negative: wait until the hook returns.
	EventTimeout time.Duration

	// Logger receives store and limiter failures (Select fails open past a
	// broken store), panics in OnAccountEvent, and at debug level why a
	// sticky account was skipped. nil: slog.Default().
	Logger *slog.Logger

	// Now is the clock. nil: time.Now. Tests set it to move time by hand;
	// it also drives the default in-memory Store, and a relay.Handler
	// using this Scheduler measures its turns with it.
	Now func() time.Time

	// rand returns uniform numbers in [0, 1) for the weighted random order;
	// nil: math/rand/v2. Tests seed it; it must be safe for concurrent use.
	rand func() float64

	once         sync.Once
	store        Store
	limiter      concurrency.SlotLimiter
	stickyTTL    time.Duration
	ownerTTL     time.Duration
	topK         int
	wait         concurrency.WaitOptions
	health       HealthPolicy // resolved
	eventTimeout time.Duration
	log          *slog.Logger

	// Set when the Limiter is a Batcher (batch.go): TrySelect's guesses of
	// the bindings, and the bindings BindOnRelease has yet to write.
	batcher Batcher
	seen    *memoryStore
	pending sync.Map // Store key -> value
	// lingering are the account slots SlotLinger keeps.
	lingering lingerSet

	accts  sync.Map // account ID -> *accountStats
	slab   statsSlab
	naccts atomic.Int64
	views  sync.Map // group -> *poolView
	nviews atomic.Int64
	prune  sync.RWMutex // view builds (read) against pruneStats (write)
}

func (s *Scheduler) init() {
	s.once.Do(func() {
		s.store = s.Store
		if s.store == nil {
			s.store = newMemoryStore(memoryStoreMaxKeys, s.now)
		}
		s.limiter = s.Limiter
		if s.limiter == nil {
			s.limiter = concurrency.NewMemory()
		}
		if b, ok := s.limiter.(Batcher); ok {
			s.batcher, s.seen = b, newMemoryStore(seenMaxKeys, s.now)
		}
		s.stickyTTL = knob.Positive("Scheduler.StickyTTL", s.StickyTTL, defaultStickyTTL)
		s.ownerTTL = knob.Or(s.OwnerTTL, defaultOwnerTTL)
		s.topK = knob.Positive("Scheduler.TopK", s.TopK, defaultTopK)
		// Negative fields pass through: the limiter reads them as off.
		s.wait = concurrency.WaitOptions{
			MaxWaiters: knob.Or(s.AccountWait.MaxWaiters, defaultMaxWaiters),
			Timeout:    knob.Or(s.AccountWait.Timeout, defaultWaitTimeout),
		}
		s.health = s.Health.resolved()
		s.eventTimeout = knob.Or(s.EventTimeout, defaultEventTimeout)
		s.log = s.Logger
		if s.log == nil {
			s.log = slog.Default()
		}
	})
}

func (s *Scheduler) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// uniform returns a number in [0, 1).
func (s *Scheduler) uniform() float64 {
	if s.rand == nil {
		return rand.Float64()
	}
	u := s.rand()
	if !(u >= 0 && u < 1) { // also catches NaN
		u = 0
	}
	return u
}

// Bind records that accountID served the turn q: the response it produced
// (responseID, if not empty) and q.SessionKey (if not empty) are bound to it
// for StickyTTL, and the response is recorded as created by q.APIKeyID for
// OwnerTTL. The relay calls Bind when a turn completes; calling it for
// every served turn is what keeps a session's binding alive and moves it
// when Select had to escape the bound account.
func (s *Scheduler) Bind(ctx context.Context, q Request, accountID, responseID string) error {
	s.init()
	if accountID == "" {
		return errors.New("scheduler: Bind needs an account ID")
	}
	var errs []error
	if responseID != "" {
		w := s.responseBinding(q, accountID, responseID)
		if err := s.store.Set(ctx, w.Key, w.Value, w.TTL); err != nil {
			errs = append(errs, fmt.Errorf("scheduler: binding response %s: %w", responseID, err))
		} else {
			s.remember(ctx, w.Key, w.Value)
		}
	}
	if q.SessionKey != "" {
		key := sessionKey(q.APIKeyID, q.SessionKey)
		if err := s.store.Set(ctx, key, accountID, s.stickyTTL); err != nil {
			errs = append(errs, fmt.Errorf("scheduler: binding session: %w", err))
		} else {
			s.remember(ctx, key, accountID)
		}
	}
	return errors.Join(errs...)
}

// remember notes a binding this process wrote or read, for TrySelect's
// guesses (a batching Scheduler only).
func (s *Scheduler) remember(ctx context.Context, key, value string) {
	if s.seen != nil {
		s.seen.Set(ctx, key, value, s.stickyTTL)
	}
}
