package billing_test

import (
	"fmt"
	"strings"

	"github.com/relaykit/responsesrelay/billing"
)

// Prices from the shared price file, plus the host's own entries and a
// group multiplier, price a turn's usage record in micro-USD.
func ExamplePrices() {
	file := strings.NewReader(`{
	  "sample_spec": {"input_cost_per_token": 0.0, "output_cost_per_token": 0.0},
	  "gpt-5": {"input_cost_per_token": 1.25e-06, "output_cost_per_token": 1e-05,
	            "cache_read_input_token_cost": 1.25e-07, "mode": "responses"}
	}`) // in production: os.Open("model_prices_and_context_window.json")
	models, err := billing.ReadPriceFile(file)
	if err != nil {
		fmt.Println(err)
		return
	}
	models["ft:gpt-5-mini:*"] = billing.Price{Input: 500_000, Output: 4_000_000} // $0.50 and $4 per 1M tokens
	resellers, _ := billing.ParseMicros("1.5")
	prices, err := billing.NewPrices(models, map[string]int64{"resellers": resellers})
	if err != nil {
		fmt.Println(err)
		return
	}

	u := billing.Usage{Model: "gpt-5", GroupID: "default",
		InputTokens: 12_000, CachedInputTokens: 8_000, OutputTokens: 1_500, ReasoningTokens: 1_024}
	u.CostMicros, _ = prices.Cost(u.Model, u.GroupID, u)
	fmt.Printf("%s: %d micro-USD ($%.6f)\n", u.Model, u.CostMicros, float64(u.CostMicros)/1e6)

	resold, _ := prices.Cost("gpt-5", "resellers", u)
	tuned, _ := prices.Cost("ft:gpt-5-mini:acme:42", "", u)
	_, priced := prices.Cost("gpt-9", "", billing.Usage{})
	fmt.Println(resold, tuned, priced)
	// Output:
	// gpt-5: 21000 micro-USD ($0.021000)
	// 31500 12000 false
}
