package main

import (
	"fmt"
	"slices"
	"time"
)

// roundFigures are one round's figures of one target.
type roundFigures struct {
	p50 time.Duration
	rps float64
}

func (r *result) figures() roundFigures { return roundFigures{p50: r.p50(), rps: r.rps()} }

// paired compares a target with reverseproxy round by round. Rounds
// alternate between the targets, so round i of each ran within seconds of
// the other's: a change in the machine's speed between rounds (other
// processes on shared cores move a whole run's figures by more than the
// 0.1 ms the targets are judged by) cancels in each pair, and the spread
// of the pairs shows how far one run's figure can be trusted.
type paired struct {
	p50Diff  []time.Duration // the target's p50 less reverseproxy's
	rpsRatio []float64       // the target's throughput over reverseproxy's
}

// pairedWith pairs the rounds of r with those of rp; false when either is
// missing, r is rp, or there are fewer than two rounds.
func pairedWith(r, rp *result) (paired, bool) {
	if r == nil || rp == nil || r == rp || len(r.rounds) < 2 || len(r.rounds) != len(rp.rounds) {
		return paired{}, false
	}
	var p paired
	for i, f := range r.rounds {
		g := rp.rounds[i]
		if g.rps <= 0 {
			return paired{}, false
		}
		p.p50Diff = append(p.p50Diff, f.p50-g.p50)
		p.rpsRatio = append(p.rpsRatio, f.rps/g.rps)
	}
	return p, true
}

func (p paired) p50DiffMedian() time.Duration { return median(p.p50Diff) }

func (p paired) rpsRatioMedian() float64 { return median(p.rpsRatio) }

func (p paired) p50DiffRange() string {
	return fmt.Sprintf("%+.2f to %+.2f ms", ms(slices.Min(p.p50Diff)), ms(slices.Max(p.p50Diff)))
}

func (p paired) rpsRatioRange() string {
	return fmt.Sprintf("%.2fx to %.2fx", slices.Min(p.rpsRatio), slices.Max(p.rpsRatio))
}

// median is the middle value of v (the mean of the middle two for an even
// count).
func median[T time.Duration | float64](v []T) T {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
