package billing

import (
	"fmt"
	"math"
	"math/bits"
	"path"
	"sort"
	"strings"
)

// Price is what one model costs, in micro-USD per million tokens: $1.25
// per 1M tokens is 1_250_000, so tokens × price / 1e6 is micro-USD.
// ParseMicros reads a decimal price ("1.25") into this unit exactly.
// Each price is at most 1e12 ($1 000 000 per 1M tokens).
type Price struct {
	// Input prices input tokens not read from the cache.
	Input int64
	// CachedInput prices cached input tokens. 0: the Input price, since
	// a table or file that names no cached price means none is discounted
	// (pricing them at zero would undercharge); < 0: they are free.
	CachedInput int64
	// Output prices output tokens, reasoning tokens included.
	Output int64
}

// maxPrice is the largest price, $1 000 000 per 1M tokens: far above any
// real model, and small enough that a turn's cost is computed in 128 bits
// for any token count.
const maxPrice = 1_000_000_000_000

// maxMultiplier is the largest group multiplier, ×1000, in millionths.
const maxMultiplier = 1_000_000_000

// maxPatterns bounds the wildcard entries of a table: a model without an
// exact price is tried against each of them on every turn.
const maxPatterns = 1024

// Prices is a price table: a Price per model and a multiplier per group.
// NewPrices builds it; it is not changed after that, so Cost is safe for
// concurrent use and takes no lock.
//
// A model's price is its exact entry, else the longest wildcard entry
// (path.Match syntax, as scheduler.Account.Models) that matches it, the
// first in sort order among equally long ones: "gpt-5-mini*" wins over
// "gpt-5*" for "gpt-5-mini-2025-08-07".
type Prices struct {
	// RefuseUnpriced is the policy for a turn whose model has no price:
	// true, refuse it with a 4xx before it goes upstream; false, serve it
	// priced at zero and log the model once. Set it before the table is
	// in use.
	RefuseUnpriced bool

	exact    map[string]rate
	patterns []pattern // longest first
	groups   map[string]uint64
}

// rate is a Price as Cost uses it: checked, and CachedInput resolved.
type rate struct{ in, cached, out uint64 }

type pattern struct {
	glob string
	rate rate
}

// PriceError is a price or multiplier that NewPrices, ReadPriceFile or
// ParseMicros refused.
type PriceError struct {
	Name   string // the model, pattern or group; "" for a whole file or a bare number
	Field  string // the Price field or file key at fault; "" for the entry or file as a whole
	Reason string
}

func (e *PriceError) Error() string {
	var b strings.Builder
	b.WriteString("billing: price")
	if e.Name != "" {
		fmt.Fprintf(&b, " %q", e.Name)
	}
	if e.Field != "" {
		b.WriteString(" " + e.Field)
	}
	b.WriteString(": " + e.Reason)
	return b.String()
}

// NewPrices builds a table from the price of each model (an exact name or
// a path.Match pattern; ReadPriceFile reads them from a price file) and
// the multiplier of each group in millionths: 1_500_000 is ×1.5 and 0
// makes the group free (ParseMicros reads "1.5"). A group not in groups
// pays ×1. It refuses a negative Input or Output, a price above 1e12, a
// multiplier below 0 or above ×1000, a malformed pattern, and more than
// 1024 patterns. Neither map is kept.
func NewPrices(models map[string]Price, groups map[string]int64) (*Prices, error) {
	p := &Prices{exact: make(map[string]rate, len(models)), groups: make(map[string]uint64, len(groups))}
	for name, pr := range models {
		r, err := pr.rate(name)
		if err != nil {
			return nil, err
		}
		if !strings.ContainsAny(name, `*?[\`) {
			p.exact[name] = r
			continue
		}
		if _, err := path.Match(name, ""); err != nil {
			return nil, &PriceError{Name: name, Reason: "malformed pattern"}
		}
		p.patterns = append(p.patterns, pattern{name, r})
	}
	if len(p.patterns) > maxPatterns {
		return nil, &PriceError{Reason: fmt.Sprintf("%d patterns, more than %d", len(p.patterns), maxPatterns)}
	}
	sort.Slice(p.patterns, func(i, j int) bool {
		a, b := p.patterns[i].glob, p.patterns[j].glob
		if len(a) != len(b) {
			return len(a) > len(b)
		}
		return a < b
	})
	for g, m := range groups {
		if m < 0 || m > maxMultiplier {
			return nil, &PriceError{Name: g, Field: "multiplier", Reason: "outside 0 to 1000 (0 to 1e9 millionths)"}
		}
		p.groups[g] = uint64(m)
	}
	return p, nil
}

func (pr Price) rate(name string) (rate, error) {
	check := func(field string, v int64) error {
		if v < 0 {
			return &PriceError{Name: name, Field: field, Reason: "negative"}
		}
		if v > maxPrice {
			return &PriceError{Name: name, Field: field, Reason: "above 1e12 micro-USD per 1M tokens"}
		}
		return nil
	}
	if err := check("Input", pr.Input); err != nil {
		return rate{}, err
	}
	if err := check("Output", pr.Output); err != nil {
		return rate{}, err
	}
	r := rate{in: uint64(pr.Input), out: uint64(pr.Output)}
	switch {
	case pr.CachedInput == 0:
		r.cached = r.in
	case pr.CachedInput > 0:
		if err := check("CachedInput", pr.CachedInput); err != nil {
			return rate{}, err
		}
		r.cached = uint64(pr.CachedInput)
	}
	return r, nil
}

// Cost is what u costs for model in group, in micro-USD:
//
//	((input − cached)·Input + cached·CachedInput + output·Output) / 1e6 × multiplier
//
// computed exactly and rounded half up once. As the Responses API counts
// them, input tokens include the cached ones and output tokens the
// reasoning ones (ReasoningTokens is not added again). A negative count
// counts as 0 and cached as at most input, so the cost is never negative;
// a cost beyond int64 (out of reach of real turns) is math.MaxInt64. ok is
// false, and micros 0, when no entry prices model, or p is nil; Cost with
// a zero Usage tells whether a model is priced.
func (p *Prices) Cost(model, group string, u Usage) (micros int64, ok bool) {
	if p == nil {
		return 0, false
	}
	r, ok := p.exact[model]
	if !ok {
		r, ok = p.match(model)
		if !ok {
			return 0, false
		}
	}
	mult := uint64(1_000_000)
	if m, ok := p.groups[group]; ok {
		mult = m
	}
	return cost(r, mult, u), true
}

func (p *Prices) match(model string) (rate, bool) {
	for i := range p.patterns {
		if ok, _ := path.Match(p.patterns[i].glob, model); ok {
			return p.patterns[i].rate, true
		}
	}
	return rate{}, false
}

// cost computes Cost's formula in integers: the sum of tokens × price
// (micro-USD × 1e6, below 2^105 since tokens < 2^63 and prices < 2^40)
// times the multiplier in millionths (below 2^30) fits in three words,
// and one division by 1e12 with its remainder rounds it.
func cost(r rate, mult uint64, u Usage) int64 {
	in := uint64(max(u.InputTokens, 0))
	cached := min(uint64(max(u.CachedInputTokens, 0)), in)
	out := uint64(max(u.OutputTokens, 0))

	h1, l1 := bits.Mul64(in-cached, r.in)
	h2, l2 := bits.Mul64(cached, r.cached)
	h3, l3 := bits.Mul64(out, r.out)
	lo, c := bits.Add64(l1, l2, 0)
	hi := h1 + h2 + c
	lo, c = bits.Add64(lo, l3, 0)
	hi += h3 + c

	a1, w0 := bits.Mul64(lo, mult)
	w2, b0 := bits.Mul64(hi, mult)
	w1, c := bits.Add64(a1, b0, 0)
	w2 += c

	const d = 1_000_000_000_000 // 1e6 for the price unit, 1e6 for the multiplier's
	if w2 >= d {
		return math.MaxInt64
	}
	q1, rem := bits.Div64(w2, w1, d)
	q0, rem := bits.Div64(rem, w0, d)
	if q1 != 0 || q0 > math.MaxInt64 {
		return math.MaxInt64
	}
	if rem >= d/2 && q0 < math.MaxInt64 {
		q0++
	}
	return int64(q0)
}
