package main

import (
	"testing"
	"time"
)

func TestPairedRounds(t *testing.T) {
	rp := &result{rounds: []roundFigures{{p50: 1000 * time.Microsecond, rps: 500}, {p50: 2000 * time.Microsecond, rps: 250}, {p50: 1500 * time.Microsecond, rps: 400}}}
	r := &result{rounds: []roundFigures{{p50: 1100 * time.Microsecond, rps: 450}, {p50: 2300 * time.Microsecond, rps: 250}, {p50: 1550 * time.Microsecond, rps: 360}}}
	p, ok := pairedWith(r, rp)
	if !ok {
		t.Fatal("not paired")
	}
	// Differences +0.1, +0.3, +0.05 ms: median +0.1, whatever the rounds'
	// own level (1.0 to 2.0 ms).
	if got := p.p50DiffMedian(); got != 100*time.Microsecond {
		t.Fatalf("median p50 difference %v", got)
	}
	if got := p.rpsRatioMedian(); got != 0.9 {
		t.Fatalf("median throughput ratio %v", got)
	}
	if got := p.p50DiffRange(); got != "+0.05 to +0.30 ms" {
		t.Fatalf("range %q", got)
	}
	if got := median([]float64{1, 4, 2, 3}); got != 2.5 {
		t.Fatalf("even median %v", got)
	}
	if _, ok := pairedWith(rp, rp); ok {
		t.Fatal("reverseproxy paired with itself")
	}
	if _, ok := pairedWith(&result{rounds: rp.rounds[:1]}, &result{rounds: rp.rounds[:1]}); ok {
		t.Fatal("one round paired")
	}
	if _, ok := pairedWith(&result{rounds: rp.rounds[:2]}, rp); ok {
		t.Fatal("rounds of different counts paired")
	}
}
