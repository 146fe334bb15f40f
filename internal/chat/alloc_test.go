//go:build !race

package chat

import "testing"

// The relay translates every chunk of every Chat stream: with a reused
// Events, a forwarded event must cost at most 1.5 allocations on average.
func TestStreamAllocsPerEvent(t *testing.T) {
	payloads := stream200()
	var ev Events
	events := runStream(&ev, payloads)
	allocs := testing.AllocsPerRun(20, func() { runStream(&ev, payloads) })
	if per := allocs / float64(events); per > 1.5 {
		t.Errorf("%.2f allocations per event (%v per stream of %d events), want <= 1.5", per, allocs, events)
	}
}
