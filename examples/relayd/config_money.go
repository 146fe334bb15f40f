package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/relaykit/responsesrelay/billing"
)

// Decimal is a JSON number, or a string holding one, kept as its text so
// that it is read exactly (billing.ParseMicros): $0.15 has no float64.
// null and "" are absent. Anything else is kept as it is, for validation
// to refuse with the field's name.
type Decimal string

func (d *Decimal) UnmarshalJSON(b []byte) error {
	text := string(bytes.TrimSpace(b))
	switch {
	case text == "null":
		*d = ""
	case strings.HasPrefix(text, `"`):
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*d = Decimal(s)
	default:
		*d = Decimal(text)
	}
	return nil
}

// PriceConfig is one model's price in USD per 1M tokens.
type PriceConfig struct {
	// Input prices input tokens not read from the cache. Required.
	Input Decimal `json:"input"`
	// CachedInput prices cached input tokens. Absent: the input price (no
	// discount is assumed); 0: free.
	CachedInput Decimal `json:"cached_input"`
	// Output prices output tokens, reasoning included. Required.
	Output Decimal `json:"output"`
}

// BudgetConfig is the money a key may spend per period.
type BudgetConfig struct {
	// USD is the budget, an exact decimal of at most six places, above 0.
	USD Decimal `json:"usd"`
	// Period is "total" (the default: never resets), "day" or "month"
	// (calendar periods in UTC).
	Period string `json:"period"`
}

// hasLimits reports whether the key has any quota the ledger enforces.
func (k APIKeyConfig) hasLimits() bool { return k.Budget != nil || k.RPM != 0 || k.TPM != 0 }

// hasLimits reports whether any key has a quota: relayd then holds every
// turn in a ledger.
func (c *Config) hasLimits() bool {
	return slices.ContainsFunc(c.APIKeys, APIKeyConfig.hasLimits)
}

// hasPrices reports whether the config prices any model.
func (c *Config) hasPrices() bool { return len(c.Prices) > 0 || c.PricesFile != "" }

// limits is the key's quotas as the ledger takes them. at names the key
// in errors.
func (k APIKeyConfig) limits(at string) (billing.Limits, []error) {
	var errs []error
	l := billing.Limits{RPM: k.RPM, TPM: k.TPM}
	if k.RPM < 0 {
		errs = append(errs, fmt.Errorf("%s.rpm: must not be negative (0: no limit)", at))
	}
	if k.TPM < 0 {
		errs = append(errs, fmt.Errorf("%s.tpm: must not be negative (0: no limit)", at))
	}
	if b := k.Budget; b != nil {
		switch b.Period {
		case "", billing.PeriodTotal, billing.PeriodDay, billing.PeriodMonth:
			l.Period = b.Period
		default:
			errs = append(errs, fmt.Errorf("%s.budget.period: %q is not a period; use \"total\", \"day\" or \"month\"", at, b.Period))
		}
		switch micros, err := decimal(b.USD); {
		case b.USD == "":
			errs = append(errs, fmt.Errorf("%s.budget.usd: required (leave budget out for none)", at))
		case err != nil:
			errs = append(errs, fmt.Errorf("%s.budget.usd: %w", at, err))
		case micros == 0:
			errs = append(errs, fmt.Errorf("%s.budget.usd: must be more than 0 (leave budget out for none)", at))
		default:
			l.BudgetMicros = micros
		}
	}
	return l, errs
}

// decimal reads a JSON number exactly into millionths, with the reason
// alone when it is refused (the caller names the field).
func decimal(n Decimal) (int64, error) {
	v, err := billing.ParseMicros(string(n))
	if pe, ok := errors.AsType[*billing.PriceError](err); ok {
		return 0, errors.New(pe.Reason)
	}
	return v, err
}

// priceTable builds the price table: the entries of prices_file, then
// those of prices over them. nil when neither is set. Every problem is
// reported, each naming its field.
func (c *Config) priceTable() (*billing.Prices, []error) {
	if !c.hasPrices() {
		return nil, nil
	}
	var errs []error
	models := map[string]billing.Price{}
	if c.PricesFile != "" {
		file, err := readPriceFile(c.PricesFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("prices_file: %w", err))
		}
		for name, p := range file {
			models[name] = p
		}
	}
	names := make([]string, 0, len(c.Prices))
	for name := range c.Prices {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		p, perrs := c.Prices[name].price(fmt.Sprintf("prices[%q]", name))
		if name == "" {
			perrs = append(perrs, errors.New(`prices[""]: empty model name`))
		}
		errs = append(errs, perrs...)
		models[name] = p
	}
	if len(errs) > 0 {
		return nil, errs
	}
	table, err := billing.NewPrices(models, nil)
	if err != nil {
		// A malformed pattern or too many of them; the error names the
		// entry.
		return nil, []error{fmt.Errorf("prices: %w", err)}
	}
	table.RefuseUnpriced = c.RefuseUnpriced
	return table, nil
}

// price is the entry as billing takes it. at names it in errors.
func (p PriceConfig) price(at string) (billing.Price, []error) {
	var pr billing.Price
	var errs []error
	read := func(field string, n Decimal, required bool) int64 {
		if n == "" {
			if required {
				errs = append(errs, fmt.Errorf("%s.%s: required (USD per 1M tokens)", at, field))
			}
			return 0
		}
		v, err := decimal(n)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s.%s: %w", at, field, err))
		}
		return v
	}
	pr.Input = read("input", p.Input, true)
	pr.Output = read("output", p.Output, true)
	if p.CachedInput != "" {
		// billing reads 0 as "the input price": a stated 0 is free.
		if pr.CachedInput = read("cached_input", p.CachedInput, false); pr.CachedInput == 0 {
			pr.CachedInput = -1
		}
	}
	return pr, errs
}

// readPriceFile reads a price file in the shared LiteLLM format.
func readPriceFile(name string) (map[string]billing.Price, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err // names the file
	}
	defer f.Close()
	m, err := billing.ReadPriceFile(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return m, nil
}

// validateMoney checks prices, budgets and rate limits.
func (c *Config) validateMoney(bad func(format string, args ...any)) {
	_, errs := c.priceTable()
	for _, err := range errs {
		bad("%v", err)
	}
	if c.RefuseUnpriced && !c.hasPrices() {
		bad("refuse_unpriced: set prices or prices_file; without them every model would be refused")
	}
	for i, k := range c.APIKeys {
		at := fmt.Sprintf("api_keys[%d]", i)
		_, errs := k.limits(at)
		for _, err := range errs {
			bad("%v", err)
		}
		if k.Budget != nil && !c.hasPrices() {
			bad("%s.budget: set prices or prices_file; without them every turn costs 0", at)
		}
	}
}
