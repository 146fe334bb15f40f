//go:build !unix

// Package cputime reads the CPU time the process has used, for benchmarks
// that report CPU per operation besides wall time.
package cputime

import "time"

// Process is 0: it is not measured here.
func Process() time.Duration { return 0 }
