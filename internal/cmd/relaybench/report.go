package main

import (
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"text/tabwriter"
	"time"
)

func gomaxprocs() int { return runtime.GOMAXPROCS(0) }

// jsonRow is one line of -json output. The first eight keys are fixed;
// the rest are extras, omitted where they do not apply.
type jsonRow struct {
	Workload     string `json:"workload"`
	Target       string `json:"target"`
	RPS          num    `json:"rps"`
	P50          num    `json:"p50_ms"`
	P99          num    `json:"p99_ms"`
	AllocsPerReq num    `json:"allocs_per_req"`
	BytesPerReq  num    `json:"bytes_per_req"`
	EventsPerSec num    `json:"events_per_s"`

	CPUPerReq           num    `json:"cpu_us_per_req"`
	SyscallsPerReq      num    `json:"syscalls_per_req"`
	Requests            int64  `json:"requests"`
	Errors              int64  `json:"errors"`
	EventsPerReq        num    `json:"events_per_req"`
	AddedAllocsPerReq   *num   `json:"added_allocs_per_req,omitempty"`
	AddedBytesPerReq    *num   `json:"added_bytes_per_req,omitempty"`
	AddedAllocsPerEvent *num   `json:"added_allocs_per_event,omitempty"`
	AddedCPUPerReq      *num   `json:"added_cpu_us_per_req,omitempty"`
	AddedSyscallsPerReq *num   `json:"added_syscalls_per_req,omitempty"`
	UpstreamAttempts    *num   `json:"upstream_attempts_per_req,omitempty"`
	Upstream429s        *int64 `json:"upstream_429s,omitempty"`
	// With -pace: how long a delta took from the upstream's write to the
	// client's read, and that over direct's.
	EventP50      *num `json:"event_p50_ms,omitempty"`
	EventP99      *num `json:"event_p99_ms,omitempty"`
	AddedEventP50 *num `json:"added_event_p50_ms,omitempty"`
	AddedEventP99 *num `json:"added_event_p99_ms,omitempty"`
	// With reverseproxy among the targets and more than one round: this
	// target's p50 less reverseproxy's, and its throughput over
	// reverseproxy's, round by round (each pair ran back to back).
	P50OverRPRounds []num `json:"p50_minus_rp_ms_rounds,omitempty"`
	RPSRatioRounds  []num `json:"rps_x_rp_rounds,omitempty"`
	P50OverRPMedian *num  `json:"p50_minus_rp_ms_median,omitempty"`
	RPSRatioMedian  *num  `json:"rps_x_rp_median,omitempty"`
}

func numPtr(v float64) *num { n := num(v); return &n }

// added holds a target's figures over those of direct in the same
// workload.
type added struct {
	ok                      bool
	allocs, bytes, perEvent float64
	hasPerEvent             bool
	p50, p99, cpu           time.Duration
	syscalls                float64
	evP50, evP99            time.Duration // per-event delivery, when both have samples
	hasEv                   bool
}

// find returns the result of target in rs, or nil.
func find(rs []*result, target string) *result {
	for _, r := range rs {
		if r.target == target {
			return r
		}
	}
	return nil
}

func addedOver(r *result, rs []*result) added {
	base := find(rs, targetDirect)
	if base == nil || base.requests == 0 || r.requests == 0 {
		return added{}
	}
	a := added{ok: true,
		allocs:   r.allocsPerReq() - base.allocsPerReq(),
		bytes:    r.bytesPerReq() - base.bytesPerReq(),
		p50:      r.p50() - base.p50(),
		p99:      r.p99() - base.p99(),
		cpu:      r.cpuPerReq() - base.cpuPerReq(),
		syscalls: perReq(float64(r.syscalls), r.requests) - perReq(float64(base.syscalls), base.requests),
	}
	if r.events > 0 {
		a.perEvent = a.allocs / (float64(r.events) / float64(r.requests))
		a.hasPerEvent = true
	}
	if r.evHist.n > 0 && base.evHist.n > 0 {
		a.evP50 = r.evHist.quantile(0.50) - base.evHist.quantile(0.50)
		a.evP99 = r.evHist.quantile(0.99) - base.evHist.quantile(0.99)
		a.hasEv = true
	}
	return a
}

func rowFor(r *result, rs []*result) jsonRow {
	row := jsonRow{
		Workload: r.workload, Target: r.target,
		RPS: num(r.rps()), P50: num(ms(r.p50())), P99: num(ms(r.p99())),
		AllocsPerReq: num(r.allocsPerReq()), BytesPerReq: num(r.bytesPerReq()),
		EventsPerSec:   num(r.eventsPerSec()),
		CPUPerReq:      num(us(r.cpuPerReq())),
		SyscallsPerReq: num(perReq(float64(r.syscalls), r.requests)),
		Requests:       r.requests, Errors: r.errors,
		EventsPerReq: num(perReq(float64(r.events), r.requests)),
	}
	if a := addedOver(r, rs); a.ok {
		row.AddedAllocsPerReq, row.AddedBytesPerReq = numPtr(a.allocs), numPtr(a.bytes)
		row.AddedCPUPerReq, row.AddedSyscallsPerReq = numPtr(us(a.cpu)), numPtr(a.syscalls)
		if a.hasPerEvent {
			row.AddedAllocsPerEvent = numPtr(a.perEvent)
		}
		if a.hasEv {
			row.AddedEventP50, row.AddedEventP99 = numPtr(ms(a.evP50)), numPtr(ms(a.evP99))
		}
	}
	if r.evHist.n > 0 {
		row.EventP50, row.EventP99 = numPtr(ms(r.evHist.quantile(0.50))), numPtr(ms(r.evHist.quantile(0.99)))
	}
	if p, ok := pairedWith(r, find(rs, targetReverseProxy)); ok {
		for i := range p.p50Diff {
			row.P50OverRPRounds = append(row.P50OverRPRounds, num(ms(p.p50Diff[i])))
			row.RPSRatioRounds = append(row.RPSRatioRounds, num(p.rpsRatio[i]))
		}
		row.P50OverRPMedian, row.RPSRatioMedian = numPtr(ms(p.p50DiffMedian())), numPtr(p.rpsRatioMedian())
	}
	if r.hasAttempts {
		row.UpstreamAttempts = numPtr(perReq(float64(r.relayAttempts), r.requests))
		n := r.relay429
		row.Upstream429s = &n
	}
	return row
}

// writeJSON prints one JSON object per line for the runs of one workload.
func writeJSON(w io.Writer, rs []*result) error {
	enc := json.NewEncoder(w)
	for _, r := range rs {
		if err := enc.Encode(rowFor(r, rs)); err != nil {
			return err
		}
	}
	return nil
}

// writeTable prints the runs of one workload as a table, with ratios
// against reverseproxy.
func writeTable(w io.Writer, wl workload, rs []*result, cfg config) {
	desc := map[workload]string{
		wlJSON:     "non-streaming POST",
		wlStream:   fmt.Sprintf("streaming POST, %d events per response", cfg.events),
		wlFailover: fmt.Sprintf("streaming POST, %d events; relay: 1 of 10 accounts answers 429", cfg.events),
		wlWS:       fmt.Sprintf("WebSocket turns of %d events, one connection per client", cfg.events),
		wlChatStream: fmt.Sprintf("Chat Completions upstream; direct, reverseproxy: streaming chat of %d chunks; relay: streaming POST of %d events from chat accounts",
			deltasFor(cfg.events)+chatFramingChunks, cfg.events),
	}[wl]
	fmt.Fprintf(w, "== %s: %s\n", wl, desc)
	rp := find(rs, targetReverseProxy)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\trps\tx rp\tp50 ms\tp99 ms\t+p50 ms\t+p99 ms\tallocs/req\t+allocs/req\t+allocs/event\tbytes/req\t+bytes/req\tcpu us/req\t+cpu us/req\tevents/s\terrors\t")
	for _, r := range rs {
		a := addedOver(r, rs)
		ratio := "-"
		if rp != nil && rp.rps() > 0 {
			ratio = fmt.Sprintf("%.2fx", r.rps()/rp.rps())
		}
		plus := func(f string, v float64) string {
			if !a.ok || r.target == targetDirect {
				return "-"
			}
			return fmt.Sprintf(f, v)
		}
		perEvent := "-"
		if a.hasPerEvent && r.target != targetDirect {
			perEvent = fmt.Sprintf("%.2f", a.perEvent)
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%s\t%.2f\t%.2f\t%s\t%s\t%.0f\t%s\t%s\t%.0f\t%s\t%.0f\t%s\t%.0f\t%d\t\n",
			r.target, r.rps(), ratio, ms(r.p50()), ms(r.p99()),
			plus("%+.2f", ms(a.p50)), plus("%+.2f", ms(a.p99)),
			r.allocsPerReq(), plus("%+.0f", a.allocs), perEvent,
			r.bytesPerReq(), plus("%+.0f", a.bytes), us(r.cpuPerReq()), plus("%+.0f", us(a.cpu)),
			r.eventsPerSec(), r.errors)
	}
	tw.Flush()
	for _, name := range []string{targetRelay, targetRelayd, targetRelaydBase} {
		writeSummary(w, name, rs, rp)
	}
	// Two relayd builds (or one with Redis and one without) in the same
	// rounds: their own pairs, without reverseproxy in between.
	if p, ok := pairedWith(find(rs, targetRelayd), find(rs, targetRelaydBase)); ok {
		fmt.Fprintf(w, "round by round (%d pairs): relayd p50 minus relayd-base's: median %+.2f ms, %s; throughput: median %.2fx, %s\n",
			len(p.p50Diff), ms(p.p50DiffMedian()), p.p50DiffRange(), p.rpsRatioMedian(), p.rpsRatioRange())
	}
	fmt.Fprintln(w)
}

// writeSummary compares the target name, a relay, with reverseproxy (rp,
// possibly nil) below the table.
func writeSummary(w io.Writer, name string, rs []*result, rp *result) {
	relay := find(rs, name)
	if relay != nil && rp != nil && rp.rps() > 0 {
		ar, ap := addedOver(relay, rs), addedOver(rp, rs)
		fmt.Fprintf(w, "%s vs reverseproxy: %.2fx throughput", name, relay.rps()/rp.rps())
		if ar.ok && ap.ok {
			if ap.cpu > 0 {
				fmt.Fprintf(w, "; CPU added per request %.2fx reverseproxy's (%+.0f us vs %+.0f us)",
					float64(ar.cpu)/float64(ap.cpu), us(ar.cpu), us(ap.cpu))
			}
			fmt.Fprintf(w, "; read/write syscalls added per request %+.0f (reverseproxy %+.0f)\n", ar.syscalls, ap.syscalls)
			fmt.Fprintf(w, "latency added over direct: %s p50 %+.2f ms, p99 %+.2f ms; reverseproxy p50 %+.2f ms, p99 %+.2f ms",
				name, ms(ar.p50), ms(ar.p99), ms(ap.p50), ms(ap.p99))
		}
		fmt.Fprintln(w)
	}
	if p, ok := pairedWith(relay, rp); ok {
		fmt.Fprintf(w, "round by round (%d pairs): %s p50 minus reverseproxy's: median %+.2f ms, %s; throughput: median %.2fx, %s\n",
			len(p.p50Diff), name, ms(p.p50DiffMedian()), p.p50DiffRange(), p.rpsRatioMedian(), p.rpsRatioRange())
	}
	if relay != nil && rp != nil && relay.evHist.n > 0 {
		ar, ap := addedOver(relay, rs), addedOver(rp, rs)
		if ar.hasEv && ap.hasEv {
			fmt.Fprintf(w, "per-event delivery added over direct (upstream write to client read, %d events): %s p50 %+.3f ms, p99 %+.3f ms; reverseproxy p50 %+.3f ms, p99 %+.3f ms\n",
				relay.evHist.n, name, ms(ar.evP50), ms(ar.evP99), ms(ap.evP50), ms(ap.evP99))
		}
	}
	if relay != nil && relay.hasAttempts && relay.requests > 0 {
		fmt.Fprintf(w, "%s upstream HTTP attempts: %d for %d requests (%.3f per request), %d answered 429\n",
			name, relay.relayAttempts, relay.requests, perReq(float64(relay.relayAttempts), relay.requests), relay.relay429)
	}
}

func writeNotes(w io.Writer) {
	fmt.Fprint(w, `Notes:
  x rp         throughput relative to reverseproxy.
  +p50, +p99   latency added over direct (whole request, to the last byte). At high
               concurrency on few cores this is mostly queueing; judge latency budgets
               with -concurrency 1.
  round by     each round of a target ran next to the same round of reverseproxy: the
  round        median and range of the per-round differences judge a 0.1 ms target on
               a machine whose speed drifts by more than that between rounds (-rounds 8).
  cpu          user+system CPU time of the whole process per request (getrusage); less
               sensitive than rps to other load on the machine. +cpu subtracts direct's.
               The summary line adds read/write syscalls per request (/proc/self/io).
  allocs, bytes  whole-process runtime.MemStats deltas per request: they include the
               client's and the fake upstream's. The + columns subtract direct's, leaving
               what the proxy adds; +allocs/event divides that by the events per request.
  failover     direct and reverseproxy cannot fail over, so they use only the 9 healthy
               accounts; the relay's pool has 10, one answering 429 to everything. The
               relay benches that account for the 1 s its headers ask and tries it again
               afterwards: the attempts line shows how often that happened.
  -pace        the upstream writes each event of a stream this long after the previous
               one, as a model does, and stamps it; the per-event line is how much later
               than directly each event reached the client: the latency a user waits
               for on every token, without the bursts of an unpaced fake upstream.
  chat-stream  the upstream speaks Chat Completions: direct and reverseproxy clients
               stream chat chunks from it, the relay's clients a Responses stream the
               relay translates from the same chunks (its +allocs/event is per event its
               client gets: 4 more than the upstream's chunks). With -pace the relay's
               events carry no stamps (the translation drops them): no per-event line.
  -relayd      end to end: upstream, reverseproxy and relayd each in a process of their
               own; cpu and syscalls are those of the upstream and the target's process,
               allocations the clients' alone (the + columns then show nothing useful).
  ws           reverseproxy forwards the upgrade and then copies bytes both ways: a byte
               tunnel with no per-turn work, the floor for any WebSocket proxy. The relay
               parses every turn and event (auth, slots, scheduling, usage) and keeps one
               upstream WebSocket per client connection.
`)
}

// writeIdleText prints the result of -idle.
func writeIdleText(w io.Writer, r *idleResult) {
	through := map[string]string{targetReverseProxy: "httputil.ReverseProxy", idleFloor: "the floor handler (copies bytes only)"}[r.target]
	if through == "" {
		through = "the relay"
	}
	fmt.Fprintf(w, "idle streams through %s: %d open", through, r.streams)
	if r.requested != r.streams {
		fmt.Fprintf(w, " (asked for %d)", r.requested)
	}
	fmt.Fprintf(w, ", relay to upstream over %s", r.upstreamProto)
	if r.nested > 0 {
		fmt.Fprintf(w, ", requests nested %d deep", r.nested)
	}
	fmt.Fprintln(w)
	for _, n := range r.notes {
		fmt.Fprintln(w, "  note:", n)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "relay process\tbefore\twith streams open\tper stream\t")
	fmt.Fprintf(tw, "heap in use\t%.1f MiB\t%.1f MiB\t%.1f KiB\t\n", mib(r.before.heapInuse), mib(r.open.heapInuse), r.heapPerStream())
	fmt.Fprintf(tw, "goroutine stacks\t%.1f MiB\t%.1f MiB\t%.1f KiB\t\n", mib(r.before.stackInuse), mib(r.open.stackInuse), r.stackPerStream())
	fmt.Fprintf(tw, "RSS\t%.1f MiB\t%.1f MiB\t%.1f KiB\t\n", mib(r.before.rss), mib(r.open.rss), r.rssPerStream())
	fmt.Fprintf(tw, "goroutines\t%d\t%d\t%.2f\t\n", r.before.goroutines, r.open.goroutines, r.goroutinesPerStream())
	fmt.Fprintf(tw, "open files\t%d\t%d\t%.2f\t\n", r.before.fds, r.open.fds, r.fdsPerStream())
	tw.Flush()
	verdict := "within"
	if r.rssPerStream() > idleBudgetKiB {
		verdict = "OVER"
	}
	fmt.Fprintf(w, "budget: <= %d KiB per open stream; RSS per stream %.1f KiB is %s it (heap+stacks %.1f KiB)\n",
		idleBudgetKiB, r.rssPerStream(), verdict, r.heapPerStream()+r.stackPerStream())
	fmt.Fprintf(w, "released: %d of %d streams finished with response.completed, %d failed; opening took %s\n",
		r.finished, r.streams, r.failed, r.openTime.Round(time.Millisecond))
}

type idleJSONRow struct {
	Workload            string `json:"workload"`
	Target              string `json:"target"`
	Streams             int    `json:"streams"`
	HeapPerStreamKiB    num    `json:"heap_per_stream_kib"`
	RSSPerStreamKiB     num    `json:"rss_per_stream_kib"`
	StackPerStreamKiB   num    `json:"stack_per_stream_kib"`
	GoroutinesPerStream num    `json:"goroutines_per_stream"`
	FDsPerStream        num    `json:"fds_per_stream"`
	Finished            int    `json:"finished"`
	Errors              int    `json:"errors"`
	Upstream            string `json:"upstream"`
	Requested           int    `json:"requested"`
}

func writeIdleJSON(w io.Writer, r *idleResult) error {
	return json.NewEncoder(w).Encode(idleJSONRow{
		Workload: "idle", Target: r.target, Streams: r.streams,
		HeapPerStreamKiB: num(r.heapPerStream()), RSSPerStreamKiB: num(r.rssPerStream()),
		StackPerStreamKiB: num(r.stackPerStream()), GoroutinesPerStream: num(r.goroutinesPerStream()),
		FDsPerStream: num(r.fdsPerStream()),
		Finished:     r.finished, Errors: r.failed, Upstream: r.upstreamProto, Requested: r.requested,
	})
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func mib(b uint64) float64 { return float64(b) / (1 << 20) }
