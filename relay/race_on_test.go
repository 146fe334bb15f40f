//go:build race

package relay_test

// raceEnabled: the race detector's instrumentation makes stack frames
// larger, so stack depth tests run without it (.ci/run).
const raceEnabled = true
