package billing_test

import (
	"bytes"
	"errors"
	"io"
	"math/big"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/relaykit/responsesrelay/billing"
)

// priceFile is written in the shared price file's shape: many keys per
// entry that are not prices, a sample_spec entry, entries priced in other
// units, and costs written as Python writes floats.
const priceFile = `{
  "sample_spec": {
    "max_tokens": "the largest output the provider allows",
    "input_cost_per_token": 0.0,
    "output_cost_per_token": 0.0,
    "litellm_provider": "the provider",
    "mode": "chat, embedding, completion or image_generation"
  },
  "gpt-5": {
    "max_input_tokens": 272000, "max_output_tokens": 128000,
    "input_cost_per_token": 1.25e-06, "output_cost_per_token": 1e-05,
    "cache_read_input_token_cost": 1.25e-07,
    "litellm_provider": "openai", "mode": "responses",
    "supported_endpoints": ["/v1/chat/completions", "/v1/responses"],
    "supports_reasoning": true
  },
  "gpt-4o": {
    "input_cost_per_token": 2.5e-06, "output_cost_per_token": 0.00001,
    "cache_read_input_token_cost": 0.00000125, "input_cost_per_token_batches": 1.25e-06
  },
  "example-nocache": {"input_cost_per_token": 3e-07, "output_cost_per_token": 1.5e-06},
  "example-freecache": {"input_cost_per_token": 2e-06, "output_cost_per_token": 8e-06, "cache_read_input_token_cost": 0},
  "text-embedding-example": {"input_cost_per_token": 2e-08, "output_cost_per_token": 0.0, "mode": "embedding"},
  "image-example": {"input_cost_per_image": 0.04, "mode": "image_generation"},
  "per-char-example": {"input_cost_per_character": 1.25e-07, "output_cost_per_character": 3.75e-07},
  "input-only": {"input_cost_per_token": 1e-06},
  "null-costs": {"input_cost_per_token": null, "output_cost_per_token": null},
  "string-costs": {"input_cost_per_token": "1.5e-06", "output_cost_per_token": "6e-06"},
  "tiered": {
    "input_cost_per_token": 1.25e-06, "output_cost_per_token": 1e-05,
    "tiered_pricing": [{"range": [0, 200000], "input_cost_per_token": 9}],
    "search_context_cost_per_query": {"search_context_size_low": 0.03, "output_cost_per_token": 9}
  },
  "rounded-example": {"input_cost_per_token": 3.3333333333333335e-07, "output_cost_per_token": 1.6666666666666666e-06},
  "my-finetune-*": {"input_cost_per_token": 3e-06, "output_cost_per_token": 1.2e-05},
  "not-an-object": 5
}`

func TestReadPriceFile(t *testing.T) {
	models, err := billing.ReadPriceFile(strings.NewReader(priceFile))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]billing.Price{
		"gpt-5":                  {Input: 1_250_000, CachedInput: 125_000, Output: 10_000_000},
		"gpt-4o":                 {Input: 2_500_000, CachedInput: 1_250_000, Output: 10_000_000},
		"example-nocache":        {Input: 300_000, Output: 1_500_000},                    // cached at the input price
		"example-freecache":      {Input: 2_000_000, CachedInput: -1, Output: 8_000_000}, // stated free
		"text-embedding-example": {Input: 20_000},
		"string-costs":           {Input: 1_500_000, Output: 6_000_000},
		"tiered":                 {Input: 1_250_000, Output: 10_000_000}, // nested keys are not the entry's
		"rounded-example":        {Input: 333_333, Output: 1_666_667},    // 333333.33… and 1666666.66… half up
		"my-finetune-*":          {Input: 3_000_000, Output: 12_000_000},
	}
	if len(models) != len(want) {
		t.Errorf("read %d models, want %d: %v", len(models), len(want), models)
	}
	for name, w := range want {
		if got, ok := models[name]; !ok || got != w {
			t.Errorf("%s: %+v (%v), want %+v", name, got, ok, w)
		}
	}

	prices, err := billing.NewPrices(models, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		model string
		u     billing.Usage
		want  int64
	}{
		{"gpt-5", billing.Usage{InputTokens: 12_000, CachedInputTokens: 8_000, OutputTokens: 1_500}, 5_000 + 1_000 + 15_000},
		{"example-nocache", billing.Usage{InputTokens: 1_000, CachedInputTokens: 500}, 300},
		{"example-freecache", billing.Usage{InputTokens: 1_000, CachedInputTokens: 500}, 1_000},
		{"my-finetune-abc", billing.Usage{InputTokens: 1_000, OutputTokens: 1_000}, 15_000},
	} {
		if got, ok := prices.Cost(c.model, "", c.u); !ok || got != c.want {
			t.Errorf("%s: Cost = %d, %v; want %d", c.model, got, ok, c.want)
		}
	}
	for _, unpriced := range []string{"sample_spec", "image-example", "per-char-example", "input-only", "null-costs", "not-an-object"} {
		if _, ok := prices.Cost(unpriced, "", billing.Usage{}); ok {
			t.Errorf("%s is priced", unpriced)
		}
	}
}

// entry is a price file with one model m and its costs' JSON texts.
func entry(in, out string) string {
	return `{"m":{"input_cost_per_token":` + in + `,"output_cost_per_token":` + out + `}}`
}

func TestReadPriceFileHostile(t *testing.T) {
	deep := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	longDigits := strings.Repeat("7", 1<<20)
	for _, c := range []struct {
		name  string
		file  string
		want  *billing.Price      // the price of "m", nil for none
		err   *billing.PriceError // the error, Reason not compared
		check func(map[string]billing.Price) bool
	}{
		{name: "huge exponent", file: entry("1e999999999", "0"), err: &billing.PriceError{Name: "m", Field: "input_cost_per_token"}},
		{name: "largest float", file: entry("0", "1.7976931348623157e308"), err: &billing.PriceError{Name: "m", Field: "output_cost_per_token"}},
		{name: "above $1 per token", file: entry("1.000000000001", "0"), err: &billing.PriceError{Name: "m", Field: "input_cost_per_token"}},
		{name: "$1 per token is the largest", file: entry("1", "1.0e0"), want: &billing.Price{Input: 1e12, Output: 1e12}},
		{name: "tiny exponent is zero", file: entry("1e-999999999", "5e-13"), want: &billing.Price{Output: 1}},
		{name: "a million digits, too large", file: entry(longDigits, "0"), err: &billing.PriceError{Name: "m", Field: "input_cost_per_token"}},
		{name: "a million digits, a fraction", file: entry("0."+longDigits, "0.000000000001"+longDigits), want: &billing.Price{Input: 777_777_777_778, Output: 2}},
		{name: "negative", file: entry("-1e-06", "0"), err: &billing.PriceError{Name: "m", Field: "input_cost_per_token"}},
		{name: "negative zero", file: entry("-0.0", "-0"), want: &billing.Price{}},
		{name: "NaN string", file: entry(`"NaN"`, "0"), err: &billing.PriceError{Name: "m", Field: "input_cost_per_token"}},
		{name: "Infinity string", file: entry("0", `"Infinity"`), err: &billing.PriceError{Name: "m", Field: "output_cost_per_token"}},
		{name: "padded string", file: entry(`" 1e-6"`, "0"), err: &billing.PriceError{Name: "m", Field: "input_cost_per_token"}},
		{name: "bare NaN", file: entry("NaN", "0"), err: &billing.PriceError{}},
		{name: "bool", file: entry("true", "0"), err: &billing.PriceError{Name: "m", Field: "input_cost_per_token"}},
		{name: "object", file: entry(`{"usd":1}`, "0"), err: &billing.PriceError{Name: "m", Field: "input_cost_per_token"}},
		{name: "array", file: entry("0", "[1e-6]"), err: &billing.PriceError{Name: "m", Field: "output_cost_per_token"}},
		{name: "duplicate key: the last counts",
			file: `{"m":{"input_cost_per_token":1e-06,"output_cost_per_token":0,"input_cost_per_token":2e-06}}`,
			want: &billing.Price{Input: 2_000_000}},
		{name: "duplicate model: the last counts",
			file: `{"m":{"input_cost_per_token":1e-06,"output_cost_per_token":0},"m":{"input_cost_per_token":3e-06,"output_cost_per_token":0}}`,
			want: &billing.Price{Input: 3_000_000}},
		{name: "duplicate model: a last one without price unprices it",
			file: `{"m":{"input_cost_per_token":1e-06,"output_cost_per_token":0},"m":{"mode":"chat"}}`},
		{name: "duplicate model: a bad earlier one still refuses",
			file: `{"m":{"input_cost_per_token":-1,"output_cost_per_token":0},"m":{"input_cost_per_token":1e-06,"output_cost_per_token":0}}`,
			err:  &billing.PriceError{Name: "m", Field: "input_cost_per_token"}},
		{name: "escaped name", file: `{"m\u002dx":{"input_cost_per_token":1e-06,"output_cost_per_token":0}}`,
			check: func(m map[string]billing.Price) bool { return len(m) == 1 && m["m-x"].Input == 1_000_000 }},
		{name: "deep inside an entry, within the bound",
			file: `{"x":{"a":` + deep(500) + `},"m":{"input_cost_per_token":1e-06,"output_cost_per_token":0}}`,
			want: &billing.Price{Input: 1_000_000}},
		{name: "deep beyond the bound", file: `{"m":{"a":` + deep(100_000) + `}}`, err: &billing.PriceError{}},
		{name: "a million open brackets", file: `{"m":` + strings.Repeat("[", 1_000_000), err: &billing.PriceError{}},
		{name: "truncated", file: entry("1e-06", "0")[:30], err: &billing.PriceError{}},
		{name: "top-level array", file: `[` + entry("1e-06", "0") + `]`, err: &billing.PriceError{}},
		{name: "top-level null", file: `null`, err: &billing.PriceError{}},
		{name: "empty", file: ``, err: &billing.PriceError{}},
		{name: "empty object", file: `{}`, check: func(m map[string]billing.Price) bool { return len(m) == 0 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			models, err := billing.ReadPriceFile(strings.NewReader(c.file))
			if c.err != nil {
				var pe *billing.PriceError
				if models != nil || !errors.As(err, &pe) {
					t.Fatalf("ReadPriceFile = %v, %v; want a *PriceError", models, err)
				}
				if pe.Name != c.err.Name || pe.Field != c.err.Field || pe.Reason == "" {
					t.Fatalf("error %+v, want %+v", pe, c.err)
				}
				if len(pe.Error()) > 200 {
					t.Fatalf("error message of %d bytes", len(pe.Error()))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.check != nil {
				if !c.check(models) {
					t.Fatalf("read %v", models)
				}
				return
			}
			got, ok := models["m"]
			if c.want == nil {
				if ok {
					t.Fatalf("m priced %+v", got)
				}
				return
			}
			if !ok || got != *c.want {
				t.Fatalf("m: %+v (%v), want %+v", got, ok, *c.want)
			}
		})
	}
}

// countingReader counts the bytes read from it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// A file over the size limit is refused after reading one byte past it,
// however long it goes on.
func TestReadPriceFileSizeLimit(t *testing.T) {
	file := entry("1e-06", "0")
	limit := int64(len(file))
	if _, err := billing.ReadPriceFileLimit(strings.NewReader(file), limit); err != nil {
		t.Fatalf("a file of exactly the limit: %v", err)
	}
	endless := &countingReader{r: io.MultiReader(strings.NewReader(file), neverEnding(' '))}
	models, err := billing.ReadPriceFileLimit(endless, limit)
	var pe *billing.PriceError
	if models != nil || !errors.As(err, &pe) {
		t.Fatalf("over the limit: %v, %v", models, err)
	}
	if endless.n > limit+1 {
		t.Fatalf("read %d bytes for a limit of %d", endless.n, limit)
	}

	broken := errors.New("disk gone")
	if _, err := billing.ReadPriceFile(iotest.ErrReader(broken)); !errors.Is(err, broken) {
		t.Fatalf("read error: %v", err)
	}
}

type neverEnding byte

func (b neverEnding) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(b)
	}
	return len(p), nil
}

// Costs are read exactly and rounded half up to 1e-12 USD per token:
// random decimals against a math/big reading.
func TestReadPriceFileMatchesRat(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for range 5000 {
		s := randDecimal(r)
		if r.IntN(2) == 0 && !strings.ContainsAny(s, "eE") {
			s += "e-" + string(rune('5'+r.IntN(5))) // the file's usual per-token scale
		}
		if len(s) > 1 && s[0] == '0' && s[1] >= '0' && s[1] <= '9' {
			s = "1" + s[1:] // JSON numbers have no leading zeros
		}
		x, ok := new(big.Rat).SetString(s)
		if !ok {
			t.Fatalf("reference cannot read %q", s)
		}
		x.Mul(x, big.NewRat(1e12, 1))
		x.Add(x, big.NewRat(1, 2))
		want := new(big.Int).Quo(x.Num(), x.Denom())
		inRange := want.Cmp(big.NewInt(1e12)) <= 0

		text := s
		if r.IntN(4) == 0 {
			text = `"` + s + `"`
		}
		models, err := billing.ReadPriceFile(strings.NewReader(entry(text, "0")))
		if inRange != (err == nil) || inRange && models["m"].Input != want.Int64() {
			t.Fatalf("%s: %+v, %v; reference %s", s, models["m"], err, want)
		}
	}
}

func FuzzPriceFile(f *testing.F) {
	f.Add([]byte(priceFile))
	f.Add([]byte(entry("1.25e-06", "1e-05")))
	f.Add([]byte(entry(`"3e-7"`, "-0")))
	f.Add([]byte(`{"m":{"input_cost_per_token":1,"output_cost_per_token":0,"input_cost_per_token":null},"m":5}`))
	f.Add([]byte(`{"gpt-[":{"input_cost_per_token":1e-06,"output_cost_per_token":0},"a*":{"input_cost_per_token":0,"output_cost_per_token":0}}`))
	f.Add([]byte(`{"m":{"a":[[[[[{"b":[]}]]]]],"cache_read_input_token_cost":0,"input_cost_per_token":0.5,"output_cost_per_token":9e-13}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		models, err := billing.ReadPriceFile(bytes.NewReader(data))
		if err != nil {
			var pe *billing.PriceError
			if models != nil || !errors.As(err, &pe) {
				t.Fatalf("ReadPriceFile = %v, %v", models, err)
			}
			return
		}
		// Each price is an object of its own in the file.
		if len(models) > bytes.Count(data, []byte("{")) {
			t.Fatalf("%d models from %d objects", len(models), bytes.Count(data, []byte("{")))
		}
		for name, p := range models {
			if p.Input < 0 || p.Input > 1e12 || p.Output < 0 || p.Output > 1e12 || p.CachedInput < -1 || p.CachedInput > 1e12 {
				t.Fatalf("%q: %+v out of bounds", name, p)
			}
		}
		prices, err := billing.NewPrices(models, nil)
		if err != nil {
			var pe *billing.PriceError
			if !errors.As(err, &pe) {
				t.Fatalf("NewPrices: %v", err)
			}
			return
		}
		u := billing.Usage{InputTokens: 1_000_000, CachedInputTokens: 400_000, OutputTokens: 1_000_000}
		for name := range models {
			if strings.ContainsAny(name, `*?[\`) {
				continue // a pattern need not match its own text
			}
			micros, ok := prices.Cost(name, "", u)
			if !ok || micros < 0 || micros > 2e12 {
				t.Fatalf("%q: Cost = %d, %v", name, micros, ok)
			}
		}
	})
}
