package billing

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// The ring behaves as a FIFO slice through growth, wrap-around, filters
// and shrinking, and gives a flood's room back.
func TestLedgerRing(t *testing.T) {
	var r ring
	var model []entry
	rng := rand.New(rand.NewPCG(1, 2))
	next := stamp(0)
	check := func(step int) {
		t.Helper()
		if r.n != len(model) {
			t.Fatalf("step %d: %d entries, want %d", step, r.n, len(model))
		}
		for i, e := range model {
			if got := r.buf[(r.head+i)%len(r.buf)]; got != e {
				t.Fatalf("step %d: entry %d is %v, want %v", step, i, got, e)
			}
		}
	}
	for step := range 100_000 {
		switch op := rng.IntN(100); {
		case op < 55 || step < 10_000: // a flood first
			next++
			e := entry{id: digest{uint64(next), 1}, at: next}
			r.push(e)
			model = append(model, e)
		case op < 97:
			if len(model) > 0 {
				if r.front() != model[0] {
					t.Fatalf("step %d: front %v, want %v", step, r.front(), model[0])
				}
				r.pop()
				model = model[1:]
			}
		default:
			odd := func(e entry) bool { return e.at%3 != 0 }
			r.filter(odd)
			model = slices.DeleteFunc(model, func(e entry) bool { return !odd(e) })
		}
		if step%1000 == 0 {
			check(step)
		} else if r.n != len(model) {
			t.Fatalf("step %d: %d entries, want %d", step, r.n, len(model))
		}
	}
	check(-2)
	for len(model) > 0 {
		r.pop()
		model = model[1:]
	}
	check(-1)
	if len(r.buf) > ringKeep {
		t.Fatalf("an empty ring keeps room for %d entries, want at most %d", len(r.buf), ringKeep)
	}
}
