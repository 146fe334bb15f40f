//go:build !unix

package main

// raiseFDLimit reports no limit where there is no RLIMIT_NOFILE.
func raiseFDLimit() (int, error) { return 0, nil }
