package billing

import (
	"fmt"
	"math"
	"time"
)

// ledgerScope is what MemoryLedger keeps of one API key or one user. Its
// methods accept a nil scope (one left out) and do nothing with it.
type ledgerScope struct {
	id    string
	total int64
	// The spend of the latest two days and months a record counted in.
	day, month windows
	// The fixed UTC minute the counters are of.
	minute           int64
	requests, tokens int64
	// The turns in flight and their micros.
	held, holds int64
}

// windows are a scope's latest two days or months, [0] the later.
type windows [2]window

// window is the spend of one day or month, numbered by periodNumbers.
type window struct {
	n     int64
	spent int64
	ok    bool
}

// Nouns of a scope in a Denial's message.
const (
	keyNoun  = "API key"
	userNoun = "user"
)

// scopeFor is the scope of id in m, made on first sight; nil for an empty
// id without limits, which has nobody to meter and nothing to enforce.
func scopeFor(m map[string]*ledgerScope, id string, l Limits) *ledgerScope {
	if s := m[id]; s != nil {
		return s
	}
	if id == "" && l == (Limits{}) {
		return nil
	}
	s := &ledgerScope{id: id, minute: math.MinInt64}
	m[id] = s
	return s
}

// roll moves the rate counters to minute when it is later than theirs. A
// turn stamped with an earlier minute (a clock behind another's) counts
// in the current one.
func (s *ledgerScope) roll(minute int64) {
	if s != nil && minute > s.minute {
		s.minute, s.requests, s.tokens = minute, 0, 0
	}
}

// The limits a hold is checked against, in this order: every scope's
// RPM, then every scope's TPM, then every scope's budget.
const (
	limitRequests = iota
	limitTokens
	limitBudget
)

// check is the Denial of a hold of micros and tokens at t by the limit
// kind of l, or nil when it fits. The counters are of t's minute.
func (s *ledgerScope) check(kind int, noun string, l Limits, t time.Time, micros, tokens int64) *Denial {
	if s == nil {
		return nil
	}
	switch {
	case kind == limitRequests && l.RPM > 0 && s.requests >= l.RPM:
		wait := untilNextMinute(t)
		return &Denial{Status: 429, Type: "requests", Code: "rate_limit_exceeded", RetryAfter: wait,
			Message: fmt.Sprintf("Rate limit reached for requests per minute (RPM) of this %s: limit %d, used %d, requested 1. Please try again in %s.",
				noun, l.RPM, s.requests, waitText(wait))}
	case kind == limitTokens && l.TPM > 0 && addSat(s.tokens, tokens) > l.TPM:
		wait := untilNextMinute(t)
		return &Denial{Status: 429, Type: "tokens", Code: "rate_limit_exceeded", RetryAfter: wait,
			Message: fmt.Sprintf("Rate limit reached for tokens per minute (TPM) of this %s: limit %d, used %d, requested %d. Please try again in %s.",
				noun, l.TPM, s.tokens, tokens, waitText(wait))}
	case kind == limitBudget && l.BudgetMicros > 0 && addSat(addSat(s.spent(l.Period, t), s.held), micros) > l.BudgetMicros:
		return &Denial{Message: "The budget of this " + noun + periodText(l.Period) + " is spent."}
	case kind == limitBudget && micros > math.MaxInt64-s.held:
		// Even unlimited, the holds in flight must add up in an int64, so
		// that ending one takes exactly its micros off.
		return &Denial{Message: "The turns in flight of this " + noun + " hold more than can be counted."}
	}
	return nil
}

// count adds an admitted hold.
func (s *ledgerScope) count(micros, tokens int64) {
	if s == nil {
		return
	}
	s.requests++
	s.tokens = addSat(s.tokens, tokens)
	s.held += micros // check saw that it fits
	s.holds++
}

// correct counts used tokens in place of a hold's estimate, when the
// hold's minute is still the current one.
func (s *ledgerScope) correct(minute, estimate, used int64) {
	if s != nil && s.minute == minute {
		s.tokens = max(addSat(s.tokens-estimate, used), 0)
	}
}

// remaining is what s has left under l at t, after the counting.
func (s *ledgerScope) remaining(l Limits, t time.Time) Remaining {
	r := Unlimited
	if s == nil {
		return r
	}
	if l.RPM > 0 {
		r.Requests = max(l.RPM-s.requests, 0)
	}
	if l.TPM > 0 {
		r.Tokens = max(l.TPM-s.tokens, 0)
	}
	if l.BudgetMicros > 0 {
		r.BudgetMicros = max(l.BudgetMicros-addSat(s.spent(l.Period, t), s.held), 0)
	}
	return r
}

// debit adds cost to the total and to the day and month numbered.
func (s *ledgerScope) debit(cost, day, month int64) {
	if s == nil || cost == 0 {
		return
	}
	s.total = addSat(s.total, cost)
	s.day.add(day, cost)
	s.month.add(month, cost)
}

// spent is the spend of the budget window of t.
func (s *ledgerScope) spent(period string, t time.Time) int64 {
	switch period {
	case PeriodDay:
		day, _ := periodNumbers(t)
		return s.day.get(day)
	case PeriodMonth:
		_, month := periodNumbers(t)
		return s.month.get(month)
	}
	return s.total
}

// add debits window n: one of the two kept, or a later one that
// becomes the latest, or one between them. An older one is not kept.
func (w *windows) add(n, cost int64) {
	switch {
	case w[0].ok && w[0].n == n:
		w[0].spent = addSat(w[0].spent, cost)
	case w[1].ok && w[1].n == n:
		w[1].spent = addSat(w[1].spent, cost)
	case !w[0].ok || n > w[0].n:
		w[1], w[0] = w[0], window{n: n, spent: cost, ok: true}
	case !w[1].ok || n > w[1].n:
		w[1] = window{n: n, spent: cost, ok: true}
	}
}

func (w *windows) get(n int64) int64 {
	for _, x := range w {
		if x.ok && x.n == n {
			return x.spent
		}
	}
	return 0
}

// periodNumbers numbers the UTC day and month of t.
func periodNumbers(t time.Time) (day, month int64) {
	t = t.UTC()
	y, mo, _ := t.Date()
	return floorDiv(t.Unix(), 86400), int64(y)*12 + int64(mo) - 1
}

func unixMinute(t time.Time) int64 { return floorDiv(t.Unix(), 60) }

// untilNextMinute is the wait from t to the next UTC minute, when rate
// limits count again.
func untilNextMinute(t time.Time) time.Duration {
	return time.Unix((unixMinute(t)+1)*60, 0).Sub(t)
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b < 0 {
		q--
	}
	return q
}

// addSat is a+b, saturated at the int64 bounds: a cost of
// math.MaxInt64 (an overflowed price) stays the largest amount.
func addSat(a, b int64) int64 {
	c := a + b
	if (c > a) != (b > 0) {
		if b > 0 {
			return math.MaxInt64
		}
		return math.MinInt64
	}
	return c
}

func waitText(d time.Duration) string {
	return fmt.Sprintf("%ds", int64((d+time.Second-1)/time.Second))
}

func periodText(period string) string {
	switch period {
	case PeriodDay:
		return " for today (UTC)"
	case PeriodMonth:
		return " for this month (UTC)"
	}
	return ""
}

// entry is a request id and when the ledger saw it.
type entry struct {
	id digest
	at stamp
}

// ring is a FIFO queue of entries that reuses its buffer, and halves it
// when it is mostly empty, so a flood's peak is given back.
//
// It keeps ringKeep entries' room in any case: the hold queue fills to
// about 1 024 before each compaction, and would otherwise shrink and
// grow again every time.
const ringKeep = 4096

type ring struct {
	buf     []entry
	head, n int
}

func (r *ring) push(e entry) {
	if r.n == len(r.buf) {
		r.resize(max(2*len(r.buf), 64))
	}
	r.buf[(r.head+r.n)%len(r.buf)] = e
	r.n++
}

func (r *ring) front() entry { return r.buf[r.head] }

func (r *ring) pop() {
	r.buf[r.head] = entry{}
	r.head = (r.head + 1) % len(r.buf)
	r.n--
	if r.n < len(r.buf)/4 && len(r.buf) > ringKeep {
		r.resize(len(r.buf) / 2)
	}
}

// filter keeps the entries keep says to, in order.
func (r *ring) filter(keep func(entry) bool) {
	j := 0
	for i := range r.n {
		e := r.buf[(r.head+i)%len(r.buf)]
		if keep(e) {
			r.buf[(r.head+j)%len(r.buf)] = e
			j++
		}
	}
	for i := j; i < r.n; i++ {
		r.buf[(r.head+i)%len(r.buf)] = entry{}
	}
	r.n = j
	if r.n < len(r.buf)/4 && len(r.buf) > ringKeep {
		r.resize(max(ringKeep, 2*r.n))
	}
}

func (r *ring) resize(size int) {
	buf := make([]entry, size)
	for i := range r.n {
		buf[i] = r.buf[(r.head+i)%len(r.buf)]
	}
	r.buf, r.head = buf, 0
}
