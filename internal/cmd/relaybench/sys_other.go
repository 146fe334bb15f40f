//go:build !unix

package main

import "time"

// raiseFDLimit reports no limit where there is no RLIMIT_NOFILE.
func raiseFDLimit() (int, error) { return 0, nil }

// cpuTime is not measured here.
func cpuTime() time.Duration { return 0 }
