package billing

import "fmt"

// Prices are decimals that binary floating point cannot hold ($0.15 per
// 1M tokens is no float64), so they are read from their text, digit by
// digit, into integers: no float, and no big.Rat, whose exponent a
// hostile "1e999999999" would make it compute.

// ParseMicros reads a non-negative decimal exactly into millionths:
// "1.25" is 1_250_000 and "2.5e-1" is 250_000. It reads a price in USD
// per 1M tokens into Price's unit, or a group multiplier into
// NewPrices'. The syntax is a JSON number's. It refuses a value with a
// non-zero digit below a millionth (rather than round it), a negative
// one, and one above 1 000 000.
func ParseMicros(s string) (int64, error) {
	v, reason := parseDecimal(s, 6, false)
	if reason != "" {
		if len(s) > 40 {
			s = s[:40] + "…"
		}
		return 0, &PriceError{Reason: fmt.Sprintf("%q: %s", s, reason)}
	}
	return v, nil
}

// parseDecimal reads s, a JSON number, as a count of 10^-scale: exactly,
// or, when round is set, rounded half up to that resolution. It returns
// the count, or why it refused s. Counts above maxPrice are refused. Its
// work is one pass over s, whatever the exponent.
func parseDecimal(s string, scale int, round bool) (int64, string) {
	i := 0
	neg := false
	if i < len(s) && s[i] == '-' {
		neg = true
		i++
	}
	intStart := i
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	intPart := s[intStart:i]
	if intPart == "" {
		return 0, "not a number"
	}
	var frac string
	if i < len(s) && s[i] == '.' {
		i++
		start := i
		for i < len(s) && isDigit(s[i]) {
			i++
		}
		if frac = s[start:i]; frac == "" {
			return 0, "not a number"
		}
	}
	exp := 0 // clamped to ±1e9: any value past that is 0 or too large
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		expNeg := false
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			expNeg = s[i] == '-'
			i++
		}
		start := i
		for ; i < len(s) && isDigit(s[i]); i++ {
			if exp < 1e9 {
				exp = exp*10 + int(s[i]-'0')
			}
		}
		if i == start {
			return 0, "not a number"
		}
		if expNeg {
			exp = -exp
		}
	}
	if i != len(s) {
		return 0, "not a number"
	}

	// The value is the digits of intPart+frac, an integer, times 10^e.
	// Keep only its significant digits, from the first non-zero one to
	// the last.
	n := len(intPart) + len(frac)
	digit := func(k int) byte {
		if k < len(intPart) {
			return intPart[k]
		}
		return frac[k-len(intPart)]
	}
	first, last := 0, n-1
	for first < n && digit(first) == '0' {
		first++
	}
	if first == n {
		return 0, "" // zero, "-0" included
	}
	if neg {
		return 0, "negative"
	}
	for digit(last) == '0' {
		last--
	}
	e := exp - len(frac) + scale + (n - 1 - last)
	sig := last - first + 1
	// The value is at least 10^(sig-1+e): refuse it before building it.
	if sig+e > 13 {
		return 0, "too large"
	}
	keep := sig // significant digits above the resolution
	if e < 0 {
		keep = sig + e
		if !round {
			return 0, "finer than the resolution"
		}
	}
	var v int64
	for k := 0; k < keep; k++ {
		v = v*10 + int64(digit(first+k)-'0')
	}
	for ; e > 0; e-- {
		v *= 10
	}
	if keep >= 0 && keep < sig && digit(first+keep) >= '5' {
		v++ // the first digit dropped is 5 or more: half up
	}
	if v > maxPrice {
		return 0, "too large"
	}
	return v, ""
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
