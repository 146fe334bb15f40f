// Package testservice decides what a test does about an outside server it
// needs (Redis, PostgreSQL): without one it is skipped, except in CI
// (CI=true), where .ci/run starts the server and its absence fails.
package testservice

import (
	"context"
	"net"
	"os"
	"testing"
	"time"
)

// Service is one outside server of the tests.
type Service struct {
	Env     string        // the variable holding its URL, e.g. RELAY_TEST_REDIS_URL
	Name    string        // what it is, e.g. "Redis"
	Server  string        // what .ci/run starts, e.g. "redis-server"
	Example string        // an example URL for the skip message
	Timeout time.Duration // bounds ping
}

// URL returns the service's URL once ping(ctx, url) succeeds; it skips the
// test or fails it (in CI) when the URL is unset or the server does not
// answer.
func (s Service) URL(tb testing.TB, ping func(ctx context.Context, raw string) error) string {
	tb.Helper()
	ci := os.Getenv("CI") == "true"
	raw := os.Getenv(s.Env)
	if raw == "" {
		if ci {
			tb.Fatalf("%s is not set; .ci/run starts %s and exports it", s.Env, s.Server)
		}
		tb.Skipf("%s is not set: start %s and set it (e.g. %s) to run the %s tests", s.Env, s.Server, s.Example, s.Name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.Timeout)
	defer cancel()
	if err := ping(ctx, raw); err != nil {
		if ci {
			tb.Fatalf("%s at %s=%q is unreachable: %v", s.Name, s.Env, raw, err)
		}
		tb.Skipf("%s at %s=%q is unreachable (%v): start %s to run the %s tests", s.Name, s.Env, raw, err, s.Server, s.Name)
	}
	return raw
}

// ClosedAddr is a loopback address nothing listens on: a server that is
// down, whose connections are refused at once.
func ClosedAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
