package main

import (
	"math/bits"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// histogram records latencies in log-linear buckets, as HDR histograms do:
// exact below 128 ns, then 128 buckets per power of two (under 1 % error).
// Its size is fixed, so a long run at a high rate keeps memory bounded.
type histogram struct {
	counts [histBuckets]uint32
	n      uint64
}

const (
	subBits     = 7
	subCount    = 1 << subBits
	histBuckets = (63-subBits+1)<<subBits | (subCount - 1) + 1
)

// bucketOf is the index of the bucket holding v nanoseconds.
func bucketOf(v int64) int {
	u := uint64(max(v, 0))
	if u < subCount {
		return int(u)
	}
	k := bits.Len64(u) - 1 // position of the top bit, >= subBits
	mant := (u >> (k - subBits)) & (subCount - 1)
	return (k-subBits+1)<<subBits | int(mant)
}

// bucketMid is the middle of bucket i, in nanoseconds.
func bucketMid(i int) int64 {
	if i < subCount {
		return int64(i)
	}
	e, mant := i>>subBits, uint64(i&(subCount-1))
	k := e + subBits - 1
	low := uint64(1)<<k | mant<<(k-subBits)
	width := uint64(1) << (k - subBits)
	return int64(low + width/2)
}

func (h *histogram) record(d time.Duration) {
	h.counts[bucketOf(int64(d))]++
	h.n++
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
}

// quantile returns the q-quantile (0 < q <= 1) of the recorded values.
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n) + 0.5)
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += uint64(c)
		if seen >= rank {
			return time.Duration(bucketMid(i))
		}
	}
	return 0
}

// memSnapshot is what runtime.ReadMemStats says about allocations so far.
type memSnapshot struct {
	mallocs    uint64
	totalAlloc uint64
}

func readMem() memSnapshot {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memSnapshot{mallocs: ms.Mallocs, totalAlloc: ms.TotalAlloc}
}

// syscallCount is the number of read and write system calls this process
// has made (syscr + syscw of /proc/self/io; 0 where there is none). Per
// request it shows how well a proxy batches its writes.
func syscallCount() int64 { return procSyscalls("self") }

// procSyscalls is syscallCount of the process pid ("self" or a number).
func procSyscalls(pid string) int64 {
	b, err := os.ReadFile("/proc/" + pid + "/io")
	if err != nil {
		return 0
	}
	var n int64
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		if k == "syscr" || k == "syscw" {
			c, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			n += c
		}
	}
	return n
}

// result is one workload against one target: one run, or the sum of
// several rounds.
type result struct {
	workload, target string
	requests, errors int64
	events           int64 // events (SSE events or WebSocket messages) the clients read
	elapsed          time.Duration
	hist             *histogram
	evHist           *histogram    // per-event delivery (with -pace), else empty
	mallocs, bytes   uint64        // allocations in the whole process during the traffic
	cpu              time.Duration // CPU time (user+system) of the whole process during the traffic
	syscalls         int64         // read and write system calls of the whole process during the traffic
	firstErr         string

	// Upstream attempts the relay made (HTTP only), and how many got 429.
	relayAttempts, relay429 int64
	hasAttempts             bool

	// rounds holds each round's own figures, in the order the rounds ran,
	// so that two targets can be compared round by round (paired.go).
	rounds []roundFigures
}

// add sums another round of the same workload and target into r.
func (r *result) add(o *result) {
	r.requests += o.requests
	r.errors += o.errors
	r.events += o.events
	r.elapsed += o.elapsed
	r.hist.merge(o.hist)
	r.evHist.merge(o.evHist)
	r.mallocs += o.mallocs
	r.bytes += o.bytes
	r.cpu += o.cpu
	r.syscalls += o.syscalls
	if r.firstErr == "" {
		r.firstErr = o.firstErr
	}
	r.relayAttempts += o.relayAttempts
	r.relay429 += o.relay429
	r.hasAttempts = r.hasAttempts || o.hasAttempts
	r.rounds = append(r.rounds, o.rounds...)
}

func (r *result) p50() time.Duration { return r.hist.quantile(0.50) }

func (r *result) p99() time.Duration { return r.hist.quantile(0.99) }

func (r *result) cpuPerReq() time.Duration {
	return time.Duration(perReq(float64(r.cpu), r.requests))
}

func (r *result) rps() float64 { return perSecond(r.requests, r.elapsed) }

func (r *result) eventsPerSec() float64 { return perSecond(r.events, r.elapsed) }

func (r *result) allocsPerReq() float64 { return perReq(float64(r.mallocs), r.requests) }

func (r *result) bytesPerReq() float64 { return perReq(float64(r.bytes), r.requests) }

func perSecond(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

func perReq(v float64, n int64) float64 {
	if n == 0 {
		return 0
	}
	return v / float64(n)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// num is a float64 that marshals with at most three decimals, which is
// all the precision these figures have.
type num float64

func (n num) MarshalJSON() ([]byte, error) {
	return strconv.AppendFloat(nil, float64(n), 'f', 3, 64), nil
}
