package billing

import (
	"fmt"
	"io"

	"github.com/tidwall/gjson"

	"github.com/relaykit/responsesrelay/internal/jsonx"
)

// maxPriceFileBytes bounds a price file: the shared one is a few MiB.
const maxPriceFileBytes = 64 << 20

// The price file's keys, in USD per token.
const (
	keyInput  = "input_cost_per_token"
	keyOutput = "output_cost_per_token"
	keyCached = "cache_read_input_token_cost"
)

// ReadPriceFile reads a price file in the format most gateways share
// (LiteLLM's model_prices_and_context_window.json): a JSON object of
// model name to an object whose input_cost_per_token,
// output_cost_per_token and cache_read_input_token_cost are USD per
// token. Its result goes to NewPrices, alone or merged with the host's
// own entries.
//
// An entry is a price when it has both input_cost_per_token and
// output_cost_per_token; the others (priced per character, second or
// image, or not at all, and "sample_spec") are left out, so their models
// are unpriced. Without cache_read_input_token_cost, cached tokens cost
// the input price. Every other key is ignored. A name in the file that
// holds path.Match wildcards is a pattern in NewPrices.
//
// Each cost is read exactly from its text (a JSON number, or a string
// holding one) and rounded half up to Price's unit, 1e-12 USD per token.
// When a model or a key appears twice, the last one counts, as for the
// JSON readers that write such files. The file is refused, with a
// *PriceError naming the entry, when a cost is negative, above $1 per
// token, or neither a number nor null (null counts as absent); and as a
// whole when it is larger than 64 MiB, nested deeper than 512 levels, not
// valid JSON, or not an object.
func ReadPriceFile(r io.Reader) (map[string]Price, error) {
	return readPriceFile(r, maxPriceFileBytes)
}

// readPriceFile is ReadPriceFile with a size limit of limit bytes.
func readPriceFile(r io.Reader, limit int64) (map[string]Price, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("billing: price file: %w", err)
	}
	if int64(len(b)) > limit {
		return nil, &PriceError{Reason: fmt.Sprintf("file larger than %d bytes", limit)}
	}
	// gjson validates recursively: depth first, so that no document can
	// take it deeper than jsonx.MaxDepth.
	if jsonx.DepthExceeds(b, 0) {
		return nil, &PriceError{Reason: fmt.Sprintf("file nested deeper than %d levels", jsonx.MaxDepth)}
	}
	if !gjson.ValidBytes(b) {
		return nil, &PriceError{Reason: "file is not valid JSON"}
	}
	root := gjson.ParseBytes(b)
	if !root.IsObject() {
		return nil, &PriceError{Reason: "file is not a JSON object"}
	}
	models := make(map[string]Price)
	root.ForEach(func(k, v gjson.Result) bool {
		name := k.String()
		var pr Price
		var ok bool
		if name != "sample_spec" && v.IsObject() {
			pr, ok, err = readEntry(name, v)
			if err != nil {
				return false
			}
		}
		if ok {
			models[name] = pr
		} else {
			delete(models, name) // a later entry without a price replaces an earlier one
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	return models, nil
}

// readEntry reads one model's costs; ok is false when it has no price.
func readEntry(name string, v gjson.Result) (pr Price, ok bool, err error) {
	var in, out, cached gjson.Result
	v.ForEach(func(k, v gjson.Result) bool {
		switch k.String() {
		case keyInput:
			in = v
		case keyOutput:
			out = v
		case keyCached:
			cached = v
		}
		return true
	})
	if !present(in) || !present(out) {
		return Price{}, false, nil
	}
	if pr.Input, err = perToken(name, keyInput, in); err != nil {
		return Price{}, false, err
	}
	if pr.Output, err = perToken(name, keyOutput, out); err != nil {
		return Price{}, false, err
	}
	if present(cached) {
		if pr.CachedInput, err = perToken(name, keyCached, cached); err != nil {
			return Price{}, false, err
		}
		if pr.CachedInput == 0 {
			pr.CachedInput = -1 // stated free, not absent
		}
	}
	return pr, true, nil
}

func present(v gjson.Result) bool { return v.Exists() && v.Type != gjson.Null }

// perToken reads a cost in USD per token as micro-USD per 1M tokens,
// which is ×1e12.
func perToken(name, key string, v gjson.Result) (int64, error) {
	var text string
	switch v.Type {
	case gjson.Number:
		text = v.Raw
	case gjson.String:
		text = v.Str
	default:
		return 0, &PriceError{Name: name, Field: key, Reason: "not a number"}
	}
	n, reason := parseDecimal(text, 12, true)
	if reason == "too large" {
		reason = "above $1 per token"
	}
	if reason != "" {
		return 0, &PriceError{Name: name, Field: key, Reason: reason}
	}
	return n, nil
}
