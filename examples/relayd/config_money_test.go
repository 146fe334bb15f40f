package main

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/relaykit/responsesrelay/billing"
)

const moneyBase = `"accounts": [{"id": "a1", "base_url": "https://x/v1", "api_key": "sk-secret-value-a1"}]`

// writePriceFile writes a price file in the shared format and returns its
// path.
func writePriceFile(t *testing.T, doc string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "prices.json")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Prices are read exactly from their JSON text, the config's over the
// file's; a stated cached price of 0 is free, an absent one the input
// price; budgets are exact micro-USD and reach the key's subject.
func TestParseConfigMoney(t *testing.T) {
	file := writePriceFile(t, `{
		"gpt-5": {"input_cost_per_token": 1e-3, "output_cost_per_token": 1e-3},
		"o3": {"input_cost_per_token": "2e-6", "output_cost_per_token": 8e-6, "cache_read_input_token_cost": 5e-7},
		"sample_spec": {"input_cost_per_token": 0}
	}`)
	cfg, err := parseConfig([]byte(`{` + moneyBase + `,
		"api_keys": [{"key": "rk-1", "user_id": "u1", "budget": {"usd": 0.3, "period": "day"}, "rpm": 7, "tpm": 900},
		             {"key": "rk-2", "user_id": "u2", "budget": {"usd": "12.345678"}},
		             {"key": "rk-3", "user_id": "u3"}],
		"prices": {"gpt-5": {"input": 0.15, "cached_input": 0, "output": 0.6},
		           "gpt-4*": {"input": 1e-1, "output": 3.000001}},
		"prices_file": "` + file + `"}`))
	if err != nil {
		t.Fatal(err)
	}
	table, errs := cfg.priceTable()
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	u := billing.Usage{InputTokens: 1_000_000, CachedInputTokens: 400_000, OutputTokens: 1_000_000}
	for _, c := range []struct {
		model string
		want  int64
		ok    bool
	}{
		// 0.6M × 0.15 + 0.4M free + 1M × 0.6
		{"gpt-5", 90_000 + 600_000, true},
		// no cached price: the input one; 3.000001 is exact
		{"gpt-4.1", 100_000 + 3_000_001, true},
		// the file's: 0.6M × 2 + 0.4M × 0.5 + 1M × 8
		{"o3", 1_200_000 + 200_000 + 8_000_000, true},
		{"unknown", 0, false},
	} {
		if got, ok := table.Cost(c.model, "", u); got != c.want || ok != c.ok {
			t.Errorf("%s: cost %d %v, want %d %v", c.model, got, ok, c.want, c.ok)
		}
	}
	if table.RefuseUnpriced {
		t.Error("refuse_unpriced defaults to false")
	}

	kr, err := newKeyring(cfg.APIKeys)
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]billing.Limits{
		"rk-1": {BudgetMicros: 300_000, Period: "day", RPM: 7, TPM: 900},
		"rk-2": {BudgetMicros: 12_345_678, Period: "total"},
		"rk-3": {},
	} {
		r := &http.Request{Header: http.Header{"Authorization": {"Bearer " + key}}}
		s, err := kr.authenticate(r)
		if err != nil || s.KeyLimits != want {
			t.Errorf("%s: limits %+v, %v; want %+v", key, s.KeyLimits, err, want)
		}
	}
	if !cfg.hasLimits() {
		t.Error("keys with quotas, but no ledger")
	}
}

// No prices: no table, no ledger; refuse_unpriced reaches the table.
func TestParseConfigMoneyDefaults(t *testing.T) {
	cfg, err := parseConfig([]byte(`{` + moneyBase + `, "api_keys": [{"key": "rk-1", "user_id": "u1"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if table, errs := cfg.priceTable(); table != nil || errs != nil || cfg.hasLimits() {
		t.Fatalf("table %v, errors %v, limits %v", table, errs, cfg.hasLimits())
	}
	cfg, err = parseConfig([]byte(`{` + moneyBase + `, "api_keys": [{"key": "rk-1", "user_id": "u1"}],
		"prices": {"gpt-5": {"input": 1, "output": 2}}, "refuse_unpriced": true}`))
	if err != nil {
		t.Fatal(err)
	}
	if table, _ := cfg.priceTable(); table == nil || !table.RefuseUnpriced {
		t.Fatalf("table %+v", table)
	}
}

func TestParseConfigMoneyErrors(t *testing.T) {
	const key = `"api_keys": [{"key": "rk-secret-value-1", "user_id": "u1"}]`
	const prices = `"prices": {"gpt-5": {"input": 1, "output": 2}}`
	keyWith := func(fields string) string {
		return `"api_keys": [{"key": "rk-secret-value-1", "user_id": "u1", ` + fields + `}], ` + prices
	}
	priced := func(entry string) string { return key + `, "prices": {"gpt-5": ` + entry + `}` }
	badFile := writePriceFile(t, `{"gpt-5": {"input_cost_per_token": -1e-6, "output_cost_per_token": 1e-6}}`)
	cases := []struct{ name, doc, want string }{
		{"negative price", priced(`{"input": -1.5, "output": 2}`), `prices["gpt-5"].input: "-1.5": negative`},
		{"negative cached price", priced(`{"input": 1, "cached_input": -0.1, "output": 2}`), `prices["gpt-5"].cached_input: "-0.1": negative`},
		{"price finer than a micro-USD", priced(`{"input": 1, "output": 0.0000001}`), `prices["gpt-5"].output: "0.0000001": finer than the resolution`},
		{"price too large", priced(`{"input": 1e30, "output": 1}`), `prices["gpt-5"].input: "1e30": too large`},
		{"price as text", priced(`{"input": "cheap", "output": 1}`), `prices["gpt-5"].input: "cheap": not a number`},
		{"price as a bool", priced(`{"input": true, "output": 1}`), `prices["gpt-5"].input: "true": not a number`},
		{"price as an object", priced(`{"input": 1, "output": {"usd": 1}}`), `prices["gpt-5"].output: "{\"usd\": 1}": not a number`},
		{"missing output", priced(`{"input": 1}`), `prices["gpt-5"].output: required (USD per 1M tokens)`},
		{"missing input", priced(`{"output": 1}`), `prices["gpt-5"].input: required`},
		{"empty model", key + `, "prices": {"": {"input": 1, "output": 1}}`, `prices[""]: empty model name`},
		{"bad pattern", key + `, "prices": {"gpt-[": {"input": 1, "output": 1}}`, `prices: billing: price "gpt-[": malformed pattern`},
		{"missing prices file", key + `, "prices_file": "/nonexistent/prices.json"`, `prices_file: open /nonexistent/prices.json: no such file or directory`},
		{"bad prices file", key + `, "prices_file": "` + badFile + `"`, `prices_file: ` + badFile + `: billing: price "gpt-5" input_cost_per_token`},
		{"refuse without prices", key + `, "refuse_unpriced": true`, `refuse_unpriced: set prices or prices_file`},
		{"budget without prices", `"api_keys": [{"key": "rk-secret-value-1", "user_id": "u1", "budget": {"usd": 1}}]`,
			`api_keys[0].budget: set prices or prices_file; without them every turn costs 0`},
		{"negative budget", keyWith(`"budget": {"usd": -5}`), `api_keys[0].budget.usd: "-5": negative`},
		{"zero budget", keyWith(`"budget": {"usd": 0}`), `api_keys[0].budget.usd: must be more than 0 (leave budget out for none)`},
		{"budget without usd", keyWith(`"budget": {"period": "day"}`), `api_keys[0].budget.usd: required`},
		{"budget finer than a micro-USD", keyWith(`"budget": {"usd": 0.0000005}`), `api_keys[0].budget.usd: "0.0000005": finer than the resolution`},
		{"unknown period", keyWith(`"budget": {"usd": 5, "period": "week"}`),
			`api_keys[0].budget.period: "week" is not a period; use "total", "day" or "month"`},
		{"negative rpm", keyWith(`"rpm": -1`), `api_keys[0].rpm: must not be negative`},
		{"negative tpm", keyWith(`"tpm": -10`), `api_keys[0].tpm: must not be negative`},
		{"rpm as a fraction", keyWith(`"rpm": 1.5`), `field "api_keys.rpm"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := parseConfig([]byte(`{` + moneyBase + `, ` + c.doc + `}`))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error = %v\nwant it to contain %q", err, c.want)
			}
			if strings.Contains(err.Error(), "rk-secret-value-1") || strings.Contains(err.Error(), "sk-secret-value-a1") {
				t.Fatalf("error quotes a secret: %v", err)
			}
		})
	}
}
