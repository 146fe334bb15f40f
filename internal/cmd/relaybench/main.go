// Command relaybench measures what the relay costs next to a bare reverse
// proxy and next to no proxy at all, with the same traffic, in one process.
//
//	go run ./internal/cmd/relaybench                  # table, 10 s per workload and target
//	go run ./internal/cmd/relaybench -json -duration 3s
//	go run ./internal/cmd/relaybench -idle 10000      # memory per open idle stream
//	go run ./internal/cmd/relaybench -concurrency 1 -pace 1ms -workloads stream,ws
//	go run ./internal/cmd/relaybench -relayd build -workloads json,stream   # end to end
//
// A fake Responses upstream (relay/relaytest) runs in the process with no
// artificial latency, so the figures are the proxies' own overhead on
// loopback. Each workload runs against three targets, one after the other
// (in -rounds rounds that cycle through them), each run with a fresh
// upstream and proxy:
//
//   - direct: clients talk to the upstream itself, spread over its
//     healthy accounts. This is the floor, and the baseline that
//     allocations are compared against.
//   - reverseproxy: net/http/httputil.ReverseProxy with FlushInterval -1 on
//     its own loopback server, with the relay's default upstream transport.
//     It gets a buffered request body (a bytes.Reader): handed the inbound
//     r.Body it truncates some SSE streams under keep-alive load (see
//     ARCHITECTURE.md, "Buffered bodies in every proxy"). WebSocket
//     upgrades go through the proxy's built-in upgrade support, a byte
//     tunnel after the 101.
//   - relay: relay.Handler with its WebSocket mode on /v1/responses, as a host
//     mounts them, with in-memory defaults (static pool of ten accounts of
//     concurrency 1000, static keys, one bearer key, a subject without a
//     concurrency limit, usage and logs discarded).
//
// End to end (-relayd): the relayd example server, built by go build
// ./examples/relayd, runs as a process of its own with a config file as
// an operator writes one: the relay's ten accounts on the fake upstream
// (concurrency 1000 each), one client key, usage in SQLite in a temporary
// directory (through the durable spool with -relayd-spool), Redis with
// -relayd-redis, its request log at info level in a file. The upstream
// and the reverseproxy target run in child processes too (this binary
// again), so that each proxy has a process and a Go scheduler of its own
// and the benchmark's process holds only the clients. The targets are then
// direct, reverseproxy and relayd; -targets can add relay, which then
// runs in a child process too (the library as in-process, with in-memory
// defaults: what relayd adds over the library is the difference);
// cpu figures are those of the upstream and the target's process
// (/proc/PID/stat, 10 ms ticks), so +cpu is the proxy's own; allocations
// are the clients' alone. Every round starts a fresh relayd, and every
// child is stopped after its run and killed if the benchmark dies.
//
// Workloads:
//
//   - json: non-streaming POST /v1/responses.
//   - stream: streaming POST; each response has -events events.
//   - failover: as stream, but one of the relay's ten accounts answers 429
//     to every request. direct and reverseproxy cannot fail over, so they
//     use only the nine healthy accounts; the relay meets the 429ing
//     account whenever the scheduler picks it (it benches the account for
//     the 1 s its rate-limit headers ask, then tries it again), and the
//     output shows how many 429s it saw.
//   - ws: Responses WebSocket mode: one connection per worker, reused for
//     turns (a response.create message, then events to response.completed).
//   - chat-stream (not run by default): the upstream speaks Chat
//     Completions. direct and reverseproxy clients send a streaming chat
//     completion (usage asked for) to an account's /chat/completions and
//     read its -events - 4 data: lines, the last [DONE] and one the usage;
//     the relay's accounts are WireAPI "chat", and its clients send the
//     stream workload's request and read -events Responses events that
//     the relay translates from the same chunks.
//
// Every worker sends one request at a time, -concurrency workers at once.
// An error is a non-200 answer, a transport error, a stream or turn that
// does not end with response.completed, a short read, or a turn whose event
// count is not -events (a chat stream: one without [DONE] last, without a
// usage chunk, or not of -events - 4 chunks). Truncated streams count as
// errors in every target.
//
// Latency is the whole request, from sending to the last byte, for each
// request; p50 and p99 come from a log-linear histogram (under 1 % error).
// Allocations are runtime.MemStats deltas (Mallocs, TotalAlloc) over the
// run divided by requests. Client, proxy and upstream share the process,
// so the totals include the client's and the upstream's allocations; the
// added_* figures subtract those of direct, leaving what the proxy adds.
//
// Flags:
//
//	-duration d      traffic per workload and target (default 10s)
//	-rounds n        split each duration into n rounds that cycle through
//	                 the targets (default 3), so that other load on the
//	                 machine weighs on every target alike; with two or
//	                 more, each target's p50 and throughput are also
//	                 compared with reverseproxy's round by round
//	-concurrency n   concurrent clients (default 64)
//	-events n        events per streamed response, 8 framing events included
//	                 (default 200; the rest are output_text deltas)
//	-workloads list  comma-separated subset of json,stream,failover,ws,
//	                 chat-stream (default json,stream,failover,ws)
//	-targets list    comma-separated subset of direct,reverseproxy,relay
//	-json            one JSON object per line instead of a table
//	-cpuprofile f    write a CPU profile of the runs to f (use -targets relay
//	                 to profile the relay's runs alone)
//	-memprofile f    write an allocation profile of the runs to f (with
//	                 -idle: the heap profile while the streams are open)
//	-idle n          instead of the benchmark, open n streaming requests
//	                 through the relay that stay open and idle, and report
//	                 the relay process's heap, goroutine stacks, RSS,
//	                 goroutines and file descriptors per open stream (the
//	                 upstream and the clients run in child processes; see
//	                 idle.go)
//	-idle-target t   in -idle mode, what holds the streams: relay (the
//	                 default), relay-nethttp (the relay over net/http's
//	                 transport instead of its own HTTP/1.1 client),
//	                 reverseproxy (httputil.ReverseProxy as in the
//	                 benchmark), floor (a handler that only copies the
//	                 upstream's bytes over net/http's transport: what
//	                 net/http costs, see idle.go), or floor-h1 (the same
//	                 over the relay's own HTTP/1.1 client)
//	-idle-nested d   in -idle mode, every request carries a structured
//	                 output schema nested d objects deep (its validation
//	                 takes the relay's stack deep before the stream opens)
//	-idle-h2c        in -idle mode, speak cleartext HTTP/2 from the relay to
//	                 the upstream, so that n can exceed half the relay
//	                 process's file descriptor limit
//	-upstream-process  run each run's fake upstream in a child process (this
//	                 binary again), so that its goroutines do not share the
//	                 proxy's and the clients' Go scheduler; allocation and
//	                 CPU figures then leave the upstream out
//	-relayd bin      end to end: run this relayd binary ("build": go build
//	                 ./examples/relayd from the module root first)
//	-relayd-spool    relayd's usage goes through its durable spool
//	-relayd-redis u  relayd shares its state through Redis at URL u
//	-relayd-log-level l  relayd's -log-level (default info)
//	-relayd-base bin another relayd binary as target relayd-base, run in
//	                 the same alternating rounds: two builds compared
//	-relayd-args s   more relayd flags, like "-pprof 127.0.0.1:6060" to
//	                 profile it (with -rounds 1, one relayd at a time)
//	-pace d          the upstream writes each streamed event d after the
//	                 previous one (as a model produces tokens) and stamps
//	                 it; clients record each delta's delivery time (write
//	                 to read). Unpaced, the fake writes a turn in one burst,
//	                 and whole-request latency at one client then depends on
//	                 how the three parties share the cores during the burst;
//	                 paced, it is the latency each token gets
//
// With -json each line has the keys workload, target, rps, p50_ms, p99_ms,
// allocs_per_req, bytes_per_req, events_per_s, in that order, then extras:
// cpu_us_per_req (user+system CPU of the process, from getrusage: steadier
// than rps when other processes load the machine), syscalls_per_req (reads
// and writes, from /proc/self/io), requests, errors, events_per_req, the
// same figures over direct's (added_allocs_per_req, added_bytes_per_req,
// added_allocs_per_event, added_cpu_us_per_req, added_syscalls_per_req),
// for the relay's HTTP workloads its upstream attempts per request and
// the 429s it got (upstream_attempts_per_req, upstream_429s), and with
// -pace the per-event delivery quantiles and their excess over direct's
// (event_p50_ms, event_p99_ms, added_event_p50_ms, added_event_p99_ms).
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"slices"
	"strings"
	"time"
)

// config is the benchmark's command line.
type config struct {
	duration     time.Duration
	concurrency  int
	events       int
	rounds       int
	workloads    []workload
	targets      []string
	json         bool
	cpuprofile   string
	memprofile   string
	idle         int
	idleH2C      bool
	idleTarget   string
	idleNested   int
	pace         time.Duration
	upstreamProc bool
	// e2e, when not nil, runs relayd and reverseproxy as processes of
	// their own (-relayd).
	e2e *e2eOptions
}

func main() {
	// Child processes of -idle mode are this binary run again.
	if role := os.Getenv(roleEnv); role != "" {
		os.Exit(childMain(role, os.Args[1:]))
	}
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		os.Exit(2)
	}
	if err := runMain(cfg, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "relaybench:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("relaybench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg config
	var wls, tgts, relayd string
	e2e := &e2eOptions{}
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "traffic per workload and target")
	fs.IntVar(&cfg.concurrency, "concurrency", 64, "concurrent clients")
	fs.IntVar(&cfg.events, "events", 200, "events per streamed response, framing events included")
	fs.IntVar(&cfg.rounds, "rounds", 3, "rounds per workload that cycle through the targets")
	fs.StringVar(&wls, "workloads", defaultWorkloads, "comma-separated workloads (also: chat-stream)")
	fs.StringVar(&tgts, "targets", strings.Join(allTargets, ","), "comma-separated targets")
	fs.BoolVar(&cfg.json, "json", false, "print one JSON object per line")
	fs.StringVar(&cfg.cpuprofile, "cpuprofile", "", "write a CPU profile of the runs to this file")
	fs.StringVar(&cfg.memprofile, "memprofile", "", "write an allocation profile of the runs to this file")
	fs.IntVar(&cfg.idle, "idle", 0, "measure this many open idle streams through the relay instead")
	fs.BoolVar(&cfg.idleH2C, "idle-h2c", false, "in -idle mode, relay to the upstream over cleartext HTTP/2")
	fs.IntVar(&cfg.idleNested, "idle-nested", 0, "in -idle mode, nest a JSON schema this deep in every request")
	fs.StringVar(&cfg.idleTarget, "idle-target", targetRelay, "in -idle mode, what holds the streams: "+strings.Join(idleTargets, ", ")+" (see idle.go)")
	fs.BoolVar(&cfg.upstreamProc, "upstream-process", false, "run each run's fake upstream in a child process")
	fs.DurationVar(&cfg.pace, "pace", 0, "space streamed events this far apart and measure each event's delivery")
	fs.BoolVar(&noRecords, "no-records", false, "run the relay without conversation records (to measure what recording costs)")
	fs.BoolVar(&withMoney, "money", false, "run the relay with prices, an in-memory ledger holding every turn under quotas, and settlement")
	fs.StringVar(&relayd, "relayd", "", "end to end: run this relayd `binary` (\"build\": go build ./examples/relayd) and reverseproxy as processes")
	fs.BoolVar(&e2e.spool, "relayd-spool", false, "with -relayd: relayd's usage goes through its durable spool")
	fs.StringVar(&e2e.redis, "relayd-redis", "", "with -relayd: relayd shares its state through this Redis `URL` (redis://host:6379/0)")
	fs.StringVar(&e2e.baseBin, "relayd-base", "", "with -relayd: another relayd `binary`, target relayd-base, to compare two builds in the same rounds")
	fs.BoolVar(&e2e.baseNoRedis, "relayd-base-no-redis", false, "with -relayd-base and -relayd-redis: relayd-base runs without Redis (what Redis adds, round by round)")
	fs.StringVar(&e2e.logLevel, "relayd-log-level", "info", "with -relayd: relayd's -log-level")
	fs.Func("relayd-args", "with -relayd: more relayd flags, space-separated (e.g. \"-pprof 127.0.0.1:6060\")", func(s string) error {
		e2e.args = strings.Fields(s)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	explicit := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { explicit[f.Name] = true })
	fail := func(format string, a ...any) (config, error) {
		err := fmt.Errorf(format, a...)
		fmt.Fprintln(stderr, "relaybench:", err)
		return cfg, err
	}
	if fs.NArg() > 0 {
		return fail("unexpected arguments %q", fs.Args())
	}
	if cfg.duration <= 0 || cfg.concurrency <= 0 || cfg.rounds <= 0 || cfg.events <= framingEvents || cfg.idle < 0 || cfg.pace < 0 || cfg.idleNested < 0 {
		return fail("-duration, -concurrency, -rounds, -idle and -pace must be positive, -events more than %d", framingEvents)
	}
	if !slices.Contains(idleTargets, cfg.idleTarget) {
		return fail("-idle-target %q: want %s", cfg.idleTarget, strings.Join(idleTargets, ", "))
	}
	for w := range strings.SplitSeq(wls, ",") {
		w := workload(strings.TrimSpace(w))
		if !slices.Contains(allWorkloads, w) {
			return fail("unknown workload %q (want json, stream, failover, ws, chat-stream)", w)
		}
		cfg.workloads = append(cfg.workloads, w)
	}
	valid := allTargets
	if relayd != "" {
		cfg.e2e, e2e.bin = e2e, relayd
		valid = append(slices.Clip(allTargets), targetRelayd)
		if !explicit["targets"] {
			tgts = strings.Join(e2eTargets, ",")
		}
		if e2e.baseBin != "" {
			if _, err := os.Stat(e2e.baseBin); err != nil {
				return fail("-relayd-base: %v", err)
			}
			valid = append(valid, targetRelaydBase)
			if !explicit["targets"] {
				tgts += "," + targetRelaydBase
			}
		}
		if e2e.baseNoRedis && (e2e.baseBin == "" || e2e.redis == "") {
			return fail("-relayd-base-no-redis needs -relayd-base and -relayd-redis")
		}
		if cfg.idle > 0 {
			return fail("-relayd and -idle exclude each other")
		}
	} else if explicit["relayd-spool"] || explicit["relayd-redis"] || explicit["relayd-log-level"] || explicit["relayd-args"] || explicit["relayd-base"] || explicit["relayd-base-no-redis"] {
		return fail("-relayd-spool, -relayd-redis, -relayd-log-level, -relayd-args, -relayd-base and -relayd-base-no-redis need -relayd")
	}
	for t := range strings.SplitSeq(tgts, ",") {
		t = strings.TrimSpace(t)
		if !slices.Contains(valid, t) {
			return fail("unknown target %q (want %s)", t, strings.Join(valid, ", "))
		}
		cfg.targets = append(cfg.targets, t)
	}
	return cfg, nil
}

func runMain(cfg config, stdout, stderr io.Writer) error {
	if cfg.cpuprofile != "" {
		f, err := os.Create(cfg.cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if cfg.idle > 0 {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		res, err := runIdle(idleConfig{streams: cfg.idle, h2c: cfg.idleH2C, target: cfg.idleTarget, nested: cfg.idleNested, childConfig: childConfig{exe: exe, log: stderr}, heapProfile: cfg.memprofile})
		if err != nil {
			return err
		}
		if cfg.json {
			return writeIdleJSON(stdout, res)
		}
		writeIdleText(stdout, res)
		return nil
	}
	if cfg.e2e != nil {
		if err := cfg.e2e.resolve(stderr); err != nil {
			return err
		}
		defer cfg.e2e.cleanup()
	}
	if cfg.memprofile != "" {
		defer func() {
			if err := writeProfile("allocs", cfg.memprofile); err != nil {
				fmt.Fprintln(stderr, "relaybench: memprofile:", err)
			}
		}()
	}
	if !cfg.json {
		fmt.Fprintf(stdout, "relaybench: %d concurrent clients, %s per workload and target in %d rounds, %d events per streamed response, GOMAXPROCS %d\n",
			cfg.concurrency, cfg.duration, cfg.rounds, cfg.events, gomaxprocs())
		if cfg.e2e != nil {
			fmt.Fprintf(stdout, "end to end: upstream, reverseproxy and relayd (%s) in processes of their own; cpu figures are theirs\n", cfg.e2e.describe())
		}
		fmt.Fprintln(stdout)
	}
	var all []*result
	for _, w := range cfg.workloads {
		rs, err := benchWorkload(cfg, w, stderr)
		if err != nil {
			return err
		}
		all = append(all, rs...)
		if cfg.json {
			if err := writeJSON(stdout, rs); err != nil {
				return err
			}
		} else {
			writeTable(stdout, w, rs, cfg)
		}
	}
	if !cfg.json {
		writeNotes(stdout)
	}
	for _, r := range all {
		if r.errors > 0 {
			return fmt.Errorf("%d workload/target runs had errors", countErrored(all))
		}
	}
	return nil
}

// benchWorkload runs workload w against each target. The duration is split
// into rounds that cycle through the targets, so that a change in the
// machine's load during the run (other processes) weighs on every target
// alike. Each round of each target has a fresh upstream and proxy, so that
// no target inherits another's connections or account health.
func benchWorkload(cfg config, w workload, stderr io.Writer) ([]*result, error) {
	var proc *childConfig
	if cfg.upstreamProc || cfg.e2e != nil {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		proc = &childConfig{exe: exe, log: stderr}
	}
	rs := make([]*result, len(cfg.targets))
	for range cfg.rounds {
		for i, t := range cfg.targets {
			s, err := newSetup(w, deltasFor(cfg.events), cfg.pace, proc)
			if err != nil {
				return nil, err
			}
			rc := runConfig{workload: w, concurrency: cfg.concurrency, duration: cfg.duration / time.Duration(cfg.rounds),
				events: cfg.events, chatChunks: deltasFor(cfg.events) + chatFramingChunks, pace: cfg.pace}
			var e *endpoint
			if cfg.e2e != nil {
				if e, err = newE2EEndpoint(t, s, cfg.e2e, proc); err != nil {
					s.close()
					return nil, err
				}
				rc.pids = []int{s.pid}
				if e.pid != 0 {
					rc.pids = append(rc.pids, e.pid)
				}
			} else {
				e = newEndpoint(t, s)
			}
			r := run(rc, e)
			e.close()
			s.close()
			r.rounds = []roundFigures{r.figures()}
			if rs[i] == nil {
				rs[i] = r
			} else {
				rs[i].add(r)
			}
		}
	}
	for _, r := range rs {
		if r.errors > 0 {
			fmt.Fprintf(stderr, "relaybench: %s/%s: %d of %d requests failed; first: %s\n",
				w, r.target, r.errors, r.requests, r.firstErr)
		}
	}
	return rs, nil
}

func countErrored(rs []*result) int {
	n := 0
	for _, r := range rs {
		if r.errors > 0 {
			n++
		}
	}
	return n
}

// writeProfile writes the named runtime/pprof profile to path.
func writeProfile(name, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	err = pprof.Lookup(name).WriteTo(f, 0)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
