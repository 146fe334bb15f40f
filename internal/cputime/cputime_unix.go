//go:build unix

// Package cputime reads the CPU time the process has used, for benchmarks
// that report CPU per operation besides wall time.
package cputime

import (
	"syscall"
	"time"
)

// Process is the user and system CPU time this process has used.
func Process() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
