package main

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestBenchRelayd builds relayd and runs the end-to-end mode briefly: the
// relayd, relay and reverseproxy targets are processes of their own,
// every request succeeds, the rows have the documented shape, and every
// child process is gone afterwards.
func TestBenchRelayd(t *testing.T) {
	cfg, err := parseFlags([]string{"-relayd", "build", "-duration", "300ms", "-rounds", "1", "-concurrency", "2",
		"-events", "12", "-workloads", "json,stream", "-json"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.targets, e2eTargets) {
		t.Fatalf("targets %v, want %v", cfg.targets, e2eTargets)
	}
	cfg.targets = append(cfg.targets, targetRelay)
	if err := cfg.e2e.resolve(testWriter{t}); err != nil {
		t.Fatal(err)
	}
	defer cfg.e2e.cleanup()
	before := childPIDs(t)
	var out bytes.Buffer
	for _, w := range cfg.workloads {
		rs, err := benchWorkload(cfg, w, testWriter{t})
		if err != nil {
			t.Fatal(err)
		}
		if err := writeJSON(&out, rs); err != nil {
			t.Fatal(err)
		}
	}
	if after := childPIDs(t); !slices.Equal(before, after) {
		t.Errorf("child processes before %v, after %v", before, after)
	}
	rows := map[string]int{}
	for line := range strings.SplitSeq(strings.TrimSpace(out.String()), "\n") {
		if keys := jsonKeys(t, []byte(line)); !slices.Equal(keys[:len(requiredKeys)], requiredKeys) {
			t.Errorf("keys %v", keys)
		}
		var row struct {
			Workload, Target string
			Requests, Errors int64
			EventsPerReq     float64 `json:"events_per_req"`
		}
		if err := json.Unmarshal([]byte(line), &row); err != nil {
			t.Fatal(err)
		}
		if row.Requests == 0 || row.Errors != 0 {
			t.Errorf("%s", line)
		}
		if row.Workload == string(wlStream) && row.EventsPerReq != float64(cfg.events) {
			t.Errorf("%s: %v events per request, want %d", row.Target, row.EventsPerReq, cfg.events)
		}
		rows[row.Target]++
	}
	for _, target := range cfg.targets {
		if rows[target] != len(cfg.workloads) {
			t.Errorf("%d %s rows, want %d:\n%s", rows[target], target, len(cfg.workloads), out.String())
		}
	}
}

// TestRelaydFailsToStart: a binary that exits at once is an error that
// quotes its log, and leaves no process behind.
func TestRelaydFailsToStart(t *testing.T) {
	const bin = "/bin/false"
	if _, err := os.Stat(bin); err != nil {
		t.Skip("no " + bin)
	}
	s := &setup{workload: wlJSON, url: "http://127.0.0.1:1"}
	s.direct, s.relayAccounts = accountsFor(wlJSON)
	before := childPIDs(t)
	_, err := newRelayd(s, &e2eOptions{bin: bin, logLevel: "info"}, targetRelayd, bin)
	if err == nil || !strings.Contains(err.Error(), "exited before serving") {
		t.Errorf("err = %v", err)
	}
	if after := childPIDs(t); !slices.Equal(before, after) {
		t.Errorf("child processes before %v, after %v", before, after)
	}
}

// childPIDs lists this process's children (Linux; nil elsewhere). Each
// thread lists the children it forked.
func childPIDs(t *testing.T) []string {
	t.Helper()
	tasks, _ := filepath.Glob("/proc/self/task/*/children")
	var pids []string
	for _, p := range tasks {
		b, err := os.ReadFile(p)
		if err == nil {
			pids = append(pids, strings.Fields(string(b))...)
		}
	}
	slices.Sort(pids)
	return pids
}
