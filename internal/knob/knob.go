// Package knob resolves the module's tuning fields with one rule: 0 takes
// the documented default, a negative value turns the behaviour off where
// off is meaningful, and panics where it is not.
package knob

// Or is v, or def when v is 0. A negative v passes through: the caller
// reads it as off.
func Or[T ~int | ~int64](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// Positive is Or for a field where off means nothing (a size, a count of
// workers): a negative v panics with a message naming field, at the first
// use of the misconfigured value rather than as odd behaviour later.
func Positive[T ~int | ~int64](field string, v, def T) T {
	if v < 0 {
		panic("responsesrelay: " + field + " must not be negative")
	}
	return Or(v, def)
}
