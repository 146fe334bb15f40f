package main

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/internal/leakcheck"
)

func TestMain(m *testing.M) {
	// The -idle test runs this test binary as its child processes.
	if role := os.Getenv(roleEnv); role != "" {
		os.Exit(childMain(role, os.Args[1:]))
	}
	leakcheck.Main(m)
}

var requiredKeys = []string{"workload", "target", "rps", "p50_ms", "p99_ms",
	"allocs_per_req", "bytes_per_req", "events_per_s"}

// jsonKeys returns the top-level keys of a JSON object in their order.
func jsonKeys(t *testing.T, line []byte) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(line))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not a JSON object: %s", line)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, tok.(string))
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}

// TestBenchAllWorkloads runs every workload against every target briefly:
// each must serve requests without a single error, and the JSON lines must
// have the documented shape.
func TestBenchAllWorkloads(t *testing.T) {
	cfg, err := parseFlags([]string{"-duration", "100ms", "-concurrency", "4", "-events", "10", "-json"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var out, table bytes.Buffer
	for _, w := range cfg.workloads {
		rs, err := benchWorkload(cfg, w, testWriter{t})
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) != len(allTargets) {
			t.Fatalf("%s: %d results", w, len(rs))
		}
		for _, r := range rs {
			if r.requests == 0 || r.errors != 0 {
				t.Errorf("%s/%s: %d requests, %d errors (first: %s)", w, r.target, r.requests, r.errors, r.firstErr)
			}
			if w != wlJSON && r.events != r.requests*int64(cfg.events) {
				t.Errorf("%s/%s: %d events for %d requests of %d", w, r.target, r.events, r.requests, cfg.events)
			}
		}
		if err := writeJSON(&out, rs); err != nil {
			t.Fatal(err)
		}
		writeTable(&table, w, rs, cfg)
	}

	lines := bytes.Split(bytes.TrimSpace(out.Bytes()), []byte("\n"))
	if len(lines) != len(cfg.workloads)*len(allTargets) {
		t.Fatalf("%d JSON lines:\n%s", len(lines), out.Bytes())
	}
	for i, line := range lines {
		keys := jsonKeys(t, line)
		if len(keys) < len(requiredKeys) || !slices.Equal(keys[:len(requiredKeys)], requiredKeys) {
			t.Errorf("keys %v, want %v first", keys, requiredKeys)
		}
		var row map[string]any
		if err := json.Unmarshal(line, &row); err != nil {
			t.Fatal(err)
		}
		wantW, wantT := string(cfg.workloads[i/len(allTargets)]), allTargets[i%len(allTargets)]
		if row["workload"] != wantW || row["target"] != wantT {
			t.Errorf("line %d is %v/%v, want %s/%s", i, row["workload"], row["target"], wantW, wantT)
		}
		for _, k := range requiredKeys[2:] {
			if _, ok := row[k].(float64); !ok {
				t.Errorf("%s/%s: %s = %v", wantW, wantT, k, row[k])
			}
		}
		if row["rps"].(float64) <= 0 || row["errors"].(float64) != 0 {
			t.Errorf("%s/%s: %s", wantW, wantT, line)
		}
		if wantT != targetDirect && row["added_allocs_per_req"] == nil {
			t.Errorf("%s/%s: no added_allocs_per_req", wantW, wantT)
		}
		if wantW == "failover" && wantT == targetRelay && row["upstream_attempts_per_req"].(float64) < 1 {
			t.Errorf("relay failover: %s", line)
		}
	}
	for _, name := range allTargets {
		if !strings.Contains(table.String(), name) {
			t.Errorf("table lacks %s:\n%s", name, table.String())
		}
	}
}

// TestBenchPaced: with -pace every target reports per-event delivery for
// the streamed workloads, counted once per delta, and the table says how
// much the proxies add to it.
func TestBenchPaced(t *testing.T) {
	cfg, err := parseFlags([]string{"-duration", "150ms", "-rounds", "1", "-concurrency", "2", "-events", "12", "-pace", "1ms", "-workloads", "json,stream,ws"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range cfg.workloads {
		rs, err := benchWorkload(cfg, w, testWriter{t})
		if err != nil {
			t.Fatal(err)
		}
		var out, table bytes.Buffer
		if err := writeJSON(&out, rs); err != nil {
			t.Fatal(err)
		}
		writeTable(&table, w, rs, cfg)
		for i, line := range bytes.Split(bytes.TrimSpace(out.Bytes()), []byte("\n")) {
			r := rs[i]
			var row map[string]any
			if err := json.Unmarshal(line, &row); err != nil {
				t.Fatal(err)
			}
			if w == wlJSON {
				if row["event_p50_ms"] != nil || r.evHist.n != 0 {
					t.Errorf("json/%s has per-event figures: %s", r.target, line)
				}
				continue
			}
			// Each completed turn has deltasFor(12) = 4 stamped deltas.
			if r.errors != 0 || r.requests == 0 || r.evHist.n < uint64(r.requests-1)*uint64(deltasFor(cfg.events)) {
				t.Errorf("%s/%s: %d requests, %d errors, %d event samples", w, r.target, r.requests, r.errors, r.evHist.n)
			}
			p50, ok := row["event_p50_ms"].(float64)
			if !ok || p50 <= 0 || p50 > 1000 {
				t.Errorf("%s/%s: event_p50_ms %v", w, r.target, row["event_p50_ms"])
			}
			if _, ok := row["added_event_p99_ms"].(float64); r.target != targetDirect && !ok {
				t.Errorf("%s/%s: no added_event_p99_ms: %s", w, r.target, line)
			}
		}
		if w != wlJSON && !strings.Contains(table.String(), "per-event delivery added over direct") {
			t.Errorf("%s table lacks the per-event line:\n%s", w, table.String())
		}
	}
}

// TestBenchUpstreamProcess: with -upstream-process the upstream of each
// run is a child process, and every workload and target still works.
func TestBenchUpstreamProcess(t *testing.T) {
	cfg, err := parseFlags([]string{"-duration", "150ms", "-rounds", "1", "-concurrency", "2", "-events", "12", "-upstream-process"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range cfg.workloads {
		rs, err := benchWorkload(cfg, w, testWriter{t})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			if r.requests == 0 || r.errors != 0 {
				t.Errorf("%s/%s: %d requests, %d errors (first: %s)", w, r.target, r.requests, r.errors, r.firstErr)
			}
			if w != wlJSON && r.events != r.requests*int64(cfg.events) {
				t.Errorf("%s/%s: %d events for %d requests of %d", w, r.target, r.events, r.requests, cfg.events)
			}
		}
		if w == wlFailover {
			if relay := find(rs, targetRelay); relay.relay429 == 0 {
				t.Errorf("failover: the relay never met the 429 account in the child upstream")
			}
		}
	}
}

// TestIdle opens 50 idle streams through the relay (and through the
// reference targets), with the upstream and the clients in child
// processes, and checks that all opened and finished.
func TestIdle(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		h2c    bool
		target string
	}{{false, ""}, {true, ""}, {false, targetReverseProxy}, {false, idleFloor}, {false, idleFloorH1}, {false, idleRelayNetHTTP}} {
		h2c := c.h2c
		res, err := runIdle(idleConfig{streams: 50, h2c: h2c, target: c.target, childConfig: childConfig{exe: exe, log: testWriter{t}}})
		if err != nil {
			t.Fatal(err)
		}
		if want := cmp.Or(c.target, targetRelay); res.target != want {
			t.Errorf("target %q, want %q", res.target, want)
		}
		if res.streams != 50 || res.finished != 50 || res.failed != 0 {
			t.Fatalf("h2c %v: %d streams, %d finished, %d failed, notes %q", h2c, res.streams, res.finished, res.failed, res.notes)
		}
		if res.heapPerStream()+res.stackPerStream() <= 0 || res.rssPerStream() <= 0 || res.goroutinesPerStream() <= 0 {
			t.Errorf("h2c %v: per stream: heap %.1f KiB, stacks %.1f KiB, RSS %.1f KiB, %.2f goroutines",
				h2c, res.heapPerStream(), res.stackPerStream(), res.rssPerStream(), res.goroutinesPerStream())
		}
		var buf bytes.Buffer
		if err := writeIdleJSON(&buf, res); err != nil {
			t.Fatal(err)
		}
		keys := jsonKeys(t, buf.Bytes())
		want := []string{"workload", "target", "streams", "heap_per_stream_kib", "rss_per_stream_kib"}
		if !slices.Equal(keys[:len(want)], want) {
			t.Errorf("idle keys %v", keys)
		}
		writeIdleText(&buf, res)
		t.Logf("%s", buf.Bytes())
	}
}

func TestReadSSE(t *testing.T) {
	// Buffers of 64 bytes, so that the long data line takes the long-line path.
	const ev = "event: response.output_text.delta\ndata: {\"delta\":\"" + "................................................................" + "\"}\n\n"
	full := ": ping\n\n" + ev + ev + "event: response.completed\r\ndata: {}\r\n\r\n"
	n, last, err := readSSE(bufio.NewReaderSize(strings.NewReader(full), 64), nil)
	if n != 3 || last != "response.completed" || err != nil {
		t.Errorf("full stream: %d events, last %q, %v", n, last, err)
	}
	for _, cut := range []int{len(ev) + 3, len(ev) + 60, len(ev) + len(ev) - 1, len(full) - 1} {
		n, _, err := readSSE(bufio.NewReaderSize(strings.NewReader(full[:cut]), 64), nil)
		if err == nil {
			t.Errorf("cut at %d: %d events and no error", cut, n)
		}
	}
}

func TestHistogram(t *testing.T) {
	var h histogram
	for i := 1; i <= 1000; i++ {
		h.record(time.Duration(i) * time.Millisecond)
	}
	for q, want := range map[float64]time.Duration{0.5: 500 * time.Millisecond, 0.99: 990 * time.Millisecond} {
		got := h.quantile(q)
		if d := float64(got-want) / float64(want); d < -0.01 || d > 0.01 {
			t.Errorf("q%.2f = %s, want %s", q, got, want)
		}
	}
	for _, v := range []int64{0, 1, 127, 128, 129, 1 << 40, 1<<63 - 1} {
		i := bucketOf(v)
		if i >= histBuckets || (v > 0 && bucketMid(i) <= 0) {
			t.Errorf("value %d: bucket %d, mid %d", v, i, bucketMid(i))
		}
	}
}

func TestFlags(t *testing.T) {
	for _, args := range [][]string{{"-workloads", "json,nope"}, {"-targets", "x"}, {"-events", "5"}, {"-concurrency", "0"}, {"extra"},
		{"-targets", "relayd"}, {"-relayd-spool"}, {"-relayd", "build", "-idle", "10"},
		{"-relayd-base-no-redis"}, {"-relayd", "build", "-relayd-base-no-redis"},
		{"-idle", "10", "-idle-target", "nope"}} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
	cfg, err := parseFlags(nil, io.Discard)
	if err != nil || cfg.concurrency != 64 || cfg.duration != 10*time.Second || cfg.events != 200 || len(cfg.workloads) != 4 || len(cfg.targets) != 3 {
		t.Errorf("defaults %+v, %v", cfg, err)
	}
}

// testWriter sends progress and child stderr to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
