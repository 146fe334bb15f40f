package billing

import (
	"context"
	"errors"
	"hash/maphash"
	"sync"
	"time"

	"github.com/relaykit/responsesrelay/internal/knob"
)

// MemoryLedger is a Ledger in the process's memory: the budgets and rate
// limits of one relay instance, lost when it stops. Several instances
// that share budgets need a Ledger in a shared store. The zero
// MemoryLedger is ready to use; it is safe for concurrent use, and its
// fields must not change after its first use.
//
// A turn's scopes are its API key (Request.APIKeyID, with KeyLimits) and
// its user (UserID, with UserLimits); a hold must fit both. A scope with
// an empty id and no limits is left out; one with limits is kept, so that
// limits are never dropped silently.
//
// Hold checks the requests and tokens counted in the UTC minute of
// Request.Now against RPM and TPM, the key's and then the user's (a
// refusal is 429 rate_limit_exceeded of type "requests" or "tokens", as
// OpenAI answers one, with Retry-After to the next minute); then, for
// each, what the budget window of Request.Now has spent, plus every hold
// in flight, plus this one, against BudgetMicros (a refusal is the zero
// Denial's 429 insufficient_quota; so is a hold that would take a
// scope's holds past an int64, budget or not). A refused hold counts
// nothing. An admitted one counts its request and HoldTokens in the
// minute of both scopes and its HoldMicros in their holds. A Hold of an id that is held already, or was
// settled, is admitted and counts nothing more: a retried call never
// counts a turn twice, and no hold is left behind that nothing would end.
// The Remaining it returns is the key's alone: the headers speak of the
// key, and a user's limits, shared by its keys, refuse without being
// reported.
//
// Settle debits Usage.CostMicros in full (even past the hold) to the
// spend of its key and user in every window of Usage.CreatedAt (the total,
// its UTC day and its UTC month, so that Limits.Period matters only at
// Hold), ends the turn's hold, and, if the hold's minute is still its
// scope's current one, counts Usage.TotalTokens there in place of the
// hold's HoldTokens. A record without a hold (replayed, or whose hold was
// released or expired) is debited all the same, since its turn did run.
// It settles once per request id: a second Settle of an id remembered
// (see SettledTTL and MaxSettled) changes nothing.
//
// Release ends a hold without a debit. Releasing an id that is not held
// (never held, released, settled or expired) changes nothing; a request
// and its tokens stay counted in their minute.
//
// Amounts below zero count as zero: an estimate or a cost never credits.
//
// Memory: a scope is kept per API key and per user ever seen (a total
// budget never resets), with the spend of its latest two days and months
// (a record of an older day or month counts in its total, and in a month
// still kept); rate counters are the current minute's only; holds live
// at most HoldTTL and are at most 262 144 (more are refused with an
// error, so 503: each is a turn in flight); settled ids are bounded by
// SettledTTL and MaxSettled. Request ids are kept as 128-bit digests, so
// a long id costs no more than a short one. A flood of distinct ids (a
// replayed spool, a caller gone wrong) costs at most those bounds.
//
// One mutex guards it all, whatever the key: a Hold and a Settle take it
// for about 300 ns each, so it serves over a million turns a second
// before it is the bottleneck, far beyond what one process relays. Calls
// never block otherwise, and ignore their context.
type MemoryLedger struct {
	// HoldTTL is how long a hold counts when its turn never ends, judged
	// by Now from the Hold: a turn that runs longer loses its hold and is
	// debited when it settles. 0: 1 h; negative panics.
	HoldTTL time.Duration
	// SettledTTL is how long a settled request id is remembered, so that a
	// record settled again within it (a sink behind Async or a Spool
	// retries it) is not debited twice. 0: 24 h; negative panics.
	SettledTTL time.Duration
	// MaxSettled bounds the settled ids remembered; past it the oldest
	// is forgotten first, and a record of a forgotten id settled again
	// would be debited again. Cover the records a Spool can hold
	// unacknowledged. Each id costs about 80 bytes (80 MiB at the
	// default). 0: 1 048 576; negative panics.
	MaxSettled int
	// Now is the ledger's clock: the ages of holds and settled ids, and
	// the time of a Request without Now or a Usage without CreatedAt.
	// nil: time.Now.
	Now func() time.Time

	mu       sync.Mutex
	epoch    time.Time // stamps are durations since the first call
	keys     map[string]*ledgerScope
	users    map[string]*ledgerScope
	seeds    [2]maphash.Seed
	holds    map[digest]ledgerHold
	holdQ    ring // holds in order of creation, some already ended
	settled  map[digest]stamp
	settledQ ring // exactly the settled ids, oldest first
	maxHolds int  // 0: defaultMaxHolds; set by tests
}

var _ Ledger = (*MemoryLedger)(nil)

// Defaults of MemoryLedger.
const (
	defaultHoldTTL    = time.Hour
	defaultSettledTTL = 24 * time.Hour
	defaultMaxSettled = 1 << 20
	// defaultMaxHolds is far above the turns a process can have in flight
	// (each open stream costs some 64 KiB: 262 144 are 16 GiB).
	defaultMaxHolds = 1 << 18
)

var (
	errNoRequestID  = errors.New("billing: ledger: a turn without a request id cannot be held or settled once")
	errTooManyHolds = errors.New("billing: ledger: too many holds in flight")
)

// Balance is one scope's budget at a moment, for an admin page.
type Balance struct {
	SpentMicros     int64  // spent in Period
	HeldMicros      int64  // held by the turns in flight
	Holds           int64  // the turns in flight
	RemainingMicros int64  // the budget less both, at least 0; -1: unlimited
	Period          string // PeriodKey of the budget's window
}

// stamp is a time on the ledger's clock, as nanoseconds since its epoch.
type stamp int64

// digest stands for a request id: 128 bits of hash under the ledger's
// random seeds, so that ids of any length cost 16 bytes and no pointer
// for the collector to follow. Two ids of one digest are as likely as
// guessing a 128-bit key, and nobody outside the process knows the seeds.
type digest [2]uint64

func (m *MemoryLedger) digest(id string) digest {
	return digest{maphash.String(m.seeds[0], id), maphash.String(m.seeds[1], id)}
}

// ledgerHold is one admitted turn in flight.
type ledgerHold struct {
	key, user *ledgerScope // nil: the scope was left out
	micros    int64
	tokens    int64
	minute    int64
	at        stamp
}

func (m *MemoryLedger) clock() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

// begin locks m, sets it up on first use, drops what has expired at now,
// and returns now as a stamp.
func (m *MemoryLedger) begin(now time.Time) stamp {
	m.mu.Lock()
	if m.keys == nil {
		m.keys = make(map[string]*ledgerScope)
		m.users = make(map[string]*ledgerScope)
		m.holds = make(map[digest]ledgerHold)
		m.settled = make(map[digest]stamp)
		m.seeds = [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}
		m.epoch = now
	}
	at := stamp(now.Sub(m.epoch))
	m.expire(at)
	return at
}

// expire drops the holds older than HoldTTL and the settled ids older
// than SettledTTL. Both queues are in creation order (as far as the clock
// is monotonic), so this looks at their fronts only.
func (m *MemoryLedger) expire(at stamp) {
	ttl := stamp(knob.Positive("MemoryLedger.HoldTTL", m.HoldTTL, defaultHoldTTL))
	for m.holdQ.n > 0 {
		e := m.holdQ.front()
		if at-e.at < ttl {
			break
		}
		m.holdQ.pop()
		if h, ok := m.holds[e.id]; ok && h.at == e.at {
			m.drop(e.id, h)
		}
	}
	sttl := stamp(knob.Positive("MemoryLedger.SettledTTL", m.SettledTTL, defaultSettledTTL))
	for m.settledQ.n > 0 {
		e := m.settledQ.front()
		if at-e.at < sttl {
			break
		}
		m.settledQ.pop()
		delete(m.settled, e.id)
	}
}

// drop ends a hold: its micros no longer count in its scopes.
func (m *MemoryLedger) drop(id digest, h ledgerHold) {
	delete(m.holds, id)
	for _, s := range [2]*ledgerScope{h.key, h.user} {
		if s != nil {
			s.held -= h.micros
			s.holds--
		}
	}
}

// Hold implements Ledger; the type's doc says what it checks and counts.
func (m *MemoryLedger) Hold(_ context.Context, q Request) (Remaining, error) {
	if q.RequestID == "" {
		return Remaining{}, errNoRequestID
	}
	now := m.clock()
	at := m.begin(now)
	defer m.mu.Unlock()
	t := q.Now
	if t.IsZero() {
		t = now
	}
	id := m.digest(q.RequestID)
	key := scopeFor(m.keys, q.APIKeyID, q.KeyLimits)
	user := scopeFor(m.users, q.UserID, q.UserLimits)
	minute := unixMinute(t)
	key.roll(minute)
	user.roll(minute)

	if h, ok := m.holds[id]; ok {
		if at-h.at < stamp(knob.Or(m.HoldTTL, defaultHoldTTL)) {
			return key.remaining(q.KeyLimits, t), nil
		}
		m.drop(id, h) // expired, though the clock went back: hold anew
	}
	if _, ok := m.settled[id]; ok {
		return key.remaining(q.KeyLimits, t), nil
	}
	if len(m.holds) >= knob.Or(m.maxHolds, defaultMaxHolds) {
		return Remaining{}, errTooManyHolds
	}

	micros, tokens := max(q.HoldMicros, 0), max(q.HoldTokens, 0)
	for kind := range limitBudget + 1 {
		if d := key.check(kind, keyNoun, q.KeyLimits, t, micros, tokens); d != nil {
			return Remaining{}, d
		}
		if d := user.check(kind, userNoun, q.UserLimits, t, micros, tokens); d != nil {
			return Remaining{}, d
		}
	}
	key.count(micros, tokens)
	user.count(micros, tokens)
	m.holds[id] = ledgerHold{key: key, user: user, micros: micros, tokens: tokens, minute: minute, at: at}
	m.holdQ.push(entry{id: id, at: at})
	m.compactHolds()
	return key.remaining(q.KeyLimits, t), nil
}

// compactHolds rebuilds the hold queue once most of it is holds already
// ended, so that it stays proportional to the holds in flight rather than
// to the turns of the last HoldTTL.
func (m *MemoryLedger) compactHolds() {
	if m.holdQ.n <= 2*len(m.holds)+1024 {
		return
	}
	m.holdQ.filter(func(e entry) bool {
		h, ok := m.holds[e.id]
		return ok && h.at == e.at
	})
}

// Settle implements Ledger; the type's doc says what it debits.
func (m *MemoryLedger) Settle(_ context.Context, u Usage) error {
	if u.RequestID == "" {
		return errNoRequestID
	}
	now := m.clock()
	at := m.begin(now)
	defer m.mu.Unlock()
	id := m.digest(u.RequestID)
	if _, ok := m.settled[id]; ok {
		return nil
	}
	maxSettled := knob.Positive("MemoryLedger.MaxSettled", m.MaxSettled, defaultMaxSettled)
	for m.settledQ.n >= maxSettled {
		delete(m.settled, m.settledQ.front().id)
		m.settledQ.pop()
	}
	m.settled[id] = at
	m.settledQ.push(entry{id: id, at: at})

	h, held := m.holds[id]
	// The record names who ran the turn; a hold's scope stands in for an
	// id the record lacks.
	key, user := h.key, h.user
	if u.APIKeyID != "" && (key == nil || key.id != u.APIKeyID) {
		key = scopeFor(m.keys, u.APIKeyID, Limits{})
	}
	if u.UserID != "" && (user == nil || user.id != u.UserID) {
		user = scopeFor(m.users, u.UserID, Limits{})
	}
	t := u.CreatedAt
	if t.IsZero() {
		t = now
	}
	day, month := periodNumbers(t)
	cost := max(u.CostMicros, 0)
	key.debit(cost, day, month)
	user.debit(cost, day, month)
	if held {
		m.drop(id, h)
		used := max(u.TotalTokens, 0)
		h.key.correct(h.minute, h.tokens, used)
		h.user.correct(h.minute, h.tokens, used)
	}
	return nil
}

// Release implements Ledger: it ends a hold without a debit.
func (m *MemoryLedger) Release(_ context.Context, requestID string) error {
	m.begin(m.clock())
	defer m.mu.Unlock()
	id := m.digest(requestID)
	if h, ok := m.holds[id]; ok {
		m.drop(id, h)
	}
	return nil
}

// Balance is the budget of API key apiKeyID under limits l at now (zero:
// the ledger's clock): what the window of now spent, what its turns in
// flight hold, and what is left. It never fails; the error is for
// ledgers in a store.
func (m *MemoryLedger) Balance(_ context.Context, apiKeyID string, l Limits, now time.Time) (Balance, error) {
	clock := m.clock()
	if now.IsZero() {
		now = clock
	}
	m.begin(clock)
	defer m.mu.Unlock()
	b := Balance{Period: PeriodKey(l.Period, now), RemainingMicros: -1}
	if s := m.keys[apiKeyID]; s != nil {
		b.SpentMicros = s.spent(l.Period, now)
		b.HeldMicros = s.held
		b.Holds = s.holds
	}
	if l.BudgetMicros > 0 {
		b.RemainingMicros = max(l.BudgetMicros-addSat(b.SpentMicros, b.HeldMicros), 0)
	}
	return b, nil
}
