package billing_test

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/relaykit/responsesrelay/billing"
)

// refCost is the cost as the metering spec states it, in rationals:
// prices in USD per 1M tokens, so that price × tokens is micro-USD, times
// the multiplier, rounded half up once (floor(x + 1/2)).
func refCost(p billing.Price, mult int64, u billing.Usage) *big.Int {
	in := max(u.InputTokens, 0)
	cached := min(max(u.CachedInputTokens, 0), in)
	out := max(u.OutputTokens, 0)
	cachedPrice := p.CachedInput
	if cachedPrice == 0 {
		cachedPrice = p.Input
	} else if cachedPrice < 0 {
		cachedPrice = 0
	}
	usdPerM := func(v int64) *big.Rat { return big.NewRat(v, 1_000_000) }
	tok := func(v int64) *big.Rat { return new(big.Rat).SetInt64(v) }
	x := new(big.Rat).Mul(tok(in-cached), usdPerM(p.Input))
	x.Add(x, new(big.Rat).Mul(tok(cached), usdPerM(cachedPrice)))
	x.Add(x, new(big.Rat).Mul(tok(out), usdPerM(p.Output)))
	x.Mul(x, big.NewRat(mult, 1_000_000))
	x.Add(x, big.NewRat(1, 2))
	return new(big.Int).Quo(x.Num(), x.Denom()) // floor: x is not negative
}

// randTokens spreads counts over every magnitude, with the edges a real
// or hostile upstream may report.
func randTokens(r *rand.Rand) int64 {
	switch r.IntN(10) {
	case 0:
		return 0
	case 1:
		return -r.Int64N(1000) - 1
	case 2:
		return r.Int64N(1 << 40)
	case 3:
		return r.Int64()
	default:
		return r.Int64N(1 << r.IntN(32))
	}
}

func randPrice(r *rand.Rand) int64 {
	switch r.IntN(6) {
	case 0:
		return 0
	case 1:
		return 1_000_000_000_000 // the largest, $1M per 1M tokens
	default:
		return r.Int64N(min(int64(1)<<r.IntN(41), 1_000_000_000_001))
	}
}

// For every usage record, the cost is the spec's formula, exactly, with
// one rounding half up: random token counts, prices and multipliers
// against a math/big reference.
func TestCostMatchesFormula(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	maxInt := big.NewInt(math.MaxInt64)
	for i := range 20000 {
		p := billing.Price{Input: randPrice(r), CachedInput: randPrice(r), Output: randPrice(r)}
		if r.IntN(4) == 0 {
			p.CachedInput = -1 - r.Int64N(5) // free
		}
		mult := int64(1_000_000)
		groups := map[string]int64{}
		switch r.IntN(3) {
		case 0:
			mult = r.Int64N(1_000_000_001) // up to ×1000
			groups["g"] = mult
		case 1:
			mult = r.Int64N(2_000_000)
			groups["g"] = mult
		}
		u := billing.Usage{InputTokens: randTokens(r), CachedInputTokens: randTokens(r), OutputTokens: randTokens(r), ReasoningTokens: randTokens(r)}
		if r.IntN(3) == 0 && u.InputTokens > 0 {
			u.CachedInputTokens = r.Int64N(u.InputTokens + 1)
		}
		prices, err := billing.NewPrices(map[string]billing.Price{"m": p}, groups)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := prices.Cost("m", "g", u)
		want := refCost(p, mult, u)
		if want.Cmp(maxInt) > 0 {
			want = maxInt // saturated
		}
		if !ok || got != want.Int64() || got < 0 {
			t.Fatalf("case %d: %+v ×%d, in %d cached %d out %d: got %d %v, want %s",
				i, p, mult, u.InputTokens, u.CachedInputTokens, u.OutputTokens, got, ok, want)
		}
	}
}

// Rounding happens once, after the multiplier, on the record's total.
func TestCostRoundsHalfUpOnce(t *testing.T) {
	for _, c := range []struct {
		name  string
		price billing.Price
		mult  int64 // millionths; 0 here means no group entry
		u     billing.Usage
		want  int64
	}{
		{"half rounds up", billing.Price{Input: 500_000}, 0, billing.Usage{InputTokens: 1}, 1},
		{"below half rounds down", billing.Price{Input: 499_999}, 0, billing.Usage{InputTokens: 1}, 0},
		{"sum rounded, not its parts", billing.Price{Input: 400_000, Output: 400_000}, 0, billing.Usage{InputTokens: 1, OutputTokens: 1}, 1},
		{"multiplier before rounding", billing.Price{Input: 400_000}, 1_500_000, billing.Usage{InputTokens: 1}, 1},
		{"2.25 rounds to 2", billing.Price{Input: 500_000}, 1_500_000, billing.Usage{InputTokens: 3}, 2},
		{"$1.25/1M × 1M tokens", billing.Price{Input: 1_250_000}, 0, billing.Usage{InputTokens: 1_000_000}, 1_250_000},
		{"cached at its own price", billing.Price{Input: 2_000_000, CachedInput: 500_000, Output: 8_000_000},
			0, billing.Usage{InputTokens: 1000, CachedInputTokens: 600, OutputTokens: 100}, 800 + 300 + 800},
		{"cached unset: input price", billing.Price{Input: 2_000_000}, 0, billing.Usage{InputTokens: 1000, CachedInputTokens: 600}, 2000},
		{"cached negative: free", billing.Price{Input: 2_000_000, CachedInput: -1}, 0, billing.Usage{InputTokens: 1000, CachedInputTokens: 600}, 800},
		{"reasoning is inside output", billing.Price{Output: 1_000_000}, 0, billing.Usage{OutputTokens: 100, ReasoningTokens: 80}, 100},
		{"cached above input counts as input", billing.Price{Input: 1_000_000, CachedInput: 100_000}, 0, billing.Usage{InputTokens: 10, CachedInputTokens: 50}, 1},
		{"negative counts are zero", billing.Price{Input: 1_000_000, Output: 1_000_000}, 0, billing.Usage{InputTokens: -50, CachedInputTokens: -5, OutputTokens: -1}, 0},
		{"2^40 tokens at the largest price", billing.Price{Output: 1_000_000_000_000}, 0, billing.Usage{OutputTokens: 1 << 40}, 1 << 40 * 1_000_000},
		{"beyond int64 saturates", billing.Price{Input: 1_000_000_000_000, Output: 1_000_000_000_000}, 1_000_000_000, billing.Usage{InputTokens: math.MaxInt64, OutputTokens: math.MaxInt64}, math.MaxInt64},
		{"free group", billing.Price{Input: 1_000_000}, -1, billing.Usage{InputTokens: 1000}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			groups := map[string]int64{}
			switch {
			case c.mult > 0:
				groups["g"] = c.mult
			case c.mult < 0:
				groups["g"] = 0
			}
			prices, err := billing.NewPrices(map[string]billing.Price{"m": c.price}, groups)
			if err != nil {
				t.Fatal(err)
			}
			if got, ok := prices.Cost("m", "g", c.u); !ok || got != c.want {
				t.Fatalf("Cost = %d, %v; want %d", got, ok, c.want)
			}
		})
	}
}

func TestPricesLookup(t *testing.T) {
	prices, err := billing.NewPrices(map[string]billing.Price{
		"gpt-5":        {Input: 1},
		"gpt-5*":       {Input: 2},
		"gpt-5-mini*":  {Input: 3},
		"gpt-5-nan?*":  {Input: 4}, // as long as gpt-5-nano*, and sorts first
		"gpt-5-nano*":  {Input: 5},
		"o[34]-mini":   {Input: 6},
		"openai/gpt-*": {Input: 7},
	}, map[string]int64{"resellers": 2_000_000})
	if err != nil {
		t.Fatal(err)
	}
	u := billing.Usage{InputTokens: 1_000_000}
	for model, want := range map[string]int64{
		"gpt-5":                 1, // exact beats every pattern
		"gpt-5-2025-08-07":      2,
		"gpt-5-mini":            3, // the longest pattern
		"gpt-5-mini-2025-08-07": 3,
		"gpt-5-nano":            4, // equally long patterns: the first in sort order
		"gpt-5-nanox":           4,
		"o3-mini":               6,
		"o4-mini":               6,
		"openai/gpt-5":          7,
	} {
		if got, ok := prices.Cost(model, "", u); !ok || got != want {
			t.Errorf("%s: Cost = %d, %v; want %d", model, got, ok, want)
		}
	}
	for _, model := range []string{"gpt-4o", "o5-mini", "azure/gpt-5", "GPT-5", ""} {
		if got, ok := prices.Cost(model, "", u); ok || got != 0 {
			t.Errorf("%q is priced: %d", model, got)
		}
	}
	if got, _ := prices.Cost("gpt-5", "resellers", u); got != 2 {
		t.Errorf("group ×2: %d", got)
	}
	if got, _ := prices.Cost("gpt-5", "unknown", u); got != 1 {
		t.Errorf("unknown group is ×1: %d", got)
	}
	var none *billing.Prices
	if got, ok := none.Cost("gpt-5", "", u); ok || got != 0 {
		t.Errorf("nil table priced: %d, %v", got, ok)
	}
}

// The table is read by every turn at once and never written after
// NewPrices: the race detector sees concurrent Costs share it safely.
func TestPricesConcurrentCost(t *testing.T) {
	prices, err := billing.NewPrices(map[string]billing.Price{"gpt-5": {Input: 1_250_000, Output: 10_000_000}, "o*": {Input: 2_000_000}}, map[string]int64{"g": 1_500_000})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				a, _ := prices.Cost("gpt-5", "g", billing.Usage{InputTokens: 1000, OutputTokens: 100})
				b, _ := prices.Cost("o3", "", billing.Usage{InputTokens: 1000})
				if a != 3375 || b != 2000 {
					errs <- "wrong cost"
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
}

func TestNewPricesRefuses(t *testing.T) {
	many := map[string]billing.Price{}
	for i := range 1025 {
		many[strings.Repeat("x", i)+"*"] = billing.Price{}
	}
	for _, c := range []struct {
		name   string
		models map[string]billing.Price
		groups map[string]int64
		want   billing.PriceError // Reason is not compared
	}{
		{"negative input", map[string]billing.Price{"m": {Input: -1}}, nil, billing.PriceError{Name: "m", Field: "Input"}},
		{"negative output", map[string]billing.Price{"m": {Output: -1}}, nil, billing.PriceError{Name: "m", Field: "Output"}},
		{"input too large", map[string]billing.Price{"m": {Input: 1_000_000_000_001}}, nil, billing.PriceError{Name: "m", Field: "Input"}},
		{"cached too large", map[string]billing.Price{"m": {CachedInput: math.MaxInt64}}, nil, billing.PriceError{Name: "m", Field: "CachedInput"}},
		{"malformed pattern", map[string]billing.Price{"gpt-[": {}}, nil, billing.PriceError{Name: "gpt-["}},
		{"too many patterns", many, nil, billing.PriceError{}},
		{"negative multiplier", nil, map[string]int64{"g": -1}, billing.PriceError{Name: "g", Field: "multiplier"}},
		{"multiplier above ×1000", nil, map[string]int64{"g": 1_000_000_001}, billing.PriceError{Name: "g", Field: "multiplier"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, err := billing.NewPrices(c.models, c.groups)
			var pe *billing.PriceError
			if p != nil || !errors.As(err, &pe) {
				t.Fatalf("NewPrices = %v, %v; want a *PriceError", p, err)
			}
			if pe.Name != c.want.Name || pe.Field != c.want.Field || pe.Reason == "" {
				t.Fatalf("error %+v, want %+v", pe, c.want)
			}
		})
	}
	// The edges themselves are taken.
	if _, err := billing.NewPrices(map[string]billing.Price{"m": {Input: 1_000_000_000_000, CachedInput: 1_000_000_000_000, Output: 1_000_000_000_000}},
		map[string]int64{"free": 0, "max": 1_000_000_000}); err != nil {
		t.Fatal(err)
	}
}

func TestParseMicros(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "-0": 0, "0.0": 0, "1": 1_000_000, "1.25": 1_250_000, "0.000001": 1, "1.500000000": 1_500_000,
		"2.5e-1": 250_000, "125E-2": 1_250_000, "1e6": 1_000_000_000_000, "0.15": 150_000,
		"0e999999999": 0, "007.5": 7_500_000,
	} {
		got, err := billing.ParseMicros(in)
		if err != nil || got != want {
			t.Errorf("ParseMicros(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "-0.5", "0.0000001", "1.0000005", "1e6.5", "1000000.000001", "1e7",
		"9e999999999", "1e-999999999999999", "NaN", "Infinity", "+1", ".5", "5.", "1e", "1e+", "0x10", "1,5", " 1", "1 ", "١"} {
		if got, err := billing.ParseMicros(in); err == nil {
			t.Errorf("ParseMicros(%q) = %d, want an error", in, got)
		} else if pe := (*billing.PriceError)(nil); !errors.As(err, &pe) {
			t.Errorf("ParseMicros(%q): %T, want *PriceError", in, err)
		}
	}
}

// ParseMicros against a math/big reading of random decimals: exact values
// are read, every other one is refused.
func TestParseMicrosMatchesRat(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 20000 {
		s := randDecimal(r)
		x, ok := new(big.Rat).SetString(s)
		if !ok {
			t.Fatalf("reference cannot read %q", s)
		}
		x.Mul(x, big.NewRat(1_000_000, 1))
		exact := x.IsInt() && x.Num().IsInt64() && x.Num().Int64() <= 1_000_000_000_000
		got, err := billing.ParseMicros(s)
		if exact != (err == nil) || exact && got != x.Num().Int64() {
			t.Fatalf("ParseMicros(%q) = %d, %v; reference %s (exact in range: %v)", s, got, err, x.RatString(), exact)
		}
	}
}

// randDecimal writes a non-negative JSON number with a few digits, a
// fraction and an exponent, each at random.
func randDecimal(r *rand.Rand) string {
	var b strings.Builder
	digits := func(n int) {
		for range n {
			b.WriteByte(byte('0' + r.IntN(10)))
		}
	}
	digits(1 + r.IntN(8))
	if r.IntN(2) == 0 {
		b.WriteByte('.')
		digits(1 + r.IntN(14))
	}
	if r.IntN(2) == 0 {
		b.WriteString([]string{"e", "E", "e-", "e+", "E-"}[r.IntN(5)])
		b.WriteString(string(rune('0' + r.IntN(10))))
		if r.IntN(3) == 0 {
			digits(1)
		}
	}
	return b.String()
}

func BenchmarkPricesCost(b *testing.B) {
	models := map[string]billing.Price{}
	for i := range 2000 { // about the shared price file's size
		models[fmt.Sprintf("vendor/model-%d", i)] = billing.Price{Input: 1}
	}
	models["gpt-5"] = billing.Price{Input: 1_250_000, CachedInput: 125_000, Output: 10_000_000}
	models["gpt-5-mini*"] = billing.Price{Input: 250_000, Output: 2_000_000}
	models["gpt-5*"] = billing.Price{Input: 1_250_000, Output: 10_000_000}
	prices, err := billing.NewPrices(models, map[string]int64{"resellers": 1_500_000})
	if err != nil {
		b.Fatal(err)
	}
	u := billing.Usage{InputTokens: 12_000, CachedInputTokens: 8_000, OutputTokens: 1_500, ReasoningTokens: 1_024}
	for _, c := range []struct{ name, model, group string }{
		{"exact", "gpt-5", ""},
		{"exact_group", "gpt-5", "resellers"},
		{"pattern", "gpt-5-mini-2025-08-07", ""},
		{"unpriced", "claude-x", ""},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			var sum int64
			for b.Loop() {
				v, _ := prices.Cost(c.model, c.group, u)
				sum += v
			}
			if c.name != "unpriced" && sum == 0 {
				b.Fatal("no cost")
			}
		})
	}
}

func TestPricesCostAllocatesNothing(t *testing.T) {
	prices, err := billing.NewPrices(map[string]billing.Price{"gpt-5": {Input: 1}, "gpt-5-mini*": {Input: 2}}, map[string]int64{"g": 2_000_000})
	if err != nil {
		t.Fatal(err)
	}
	u := billing.Usage{InputTokens: 1000, OutputTokens: 10}
	if n := testing.AllocsPerRun(100, func() {
		prices.Cost("gpt-5", "g", u)
		prices.Cost("gpt-5-mini-x", "", u)
		prices.Cost("none", "", u)
	}); n != 0 {
		t.Fatalf("%v allocations per Cost", n)
	}
}
