package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/relaykit/responsesrelay/internal/h1"
	"github.com/relaykit/responsesrelay/relay"
)

// Idle-stream mode: how much memory the relay holds per open stream that
// carries nothing.
//
// Each stream holds four sockets when everything shares a process (client,
// relay's server side, relay to upstream, upstream's server side), and
// the file descriptor limit here is 20000. So the fake upstream and the
// clients run in two child processes (this binary again, with roleEnv
// set), and this process holds only the relay and its two sockets per
// stream. The numbers are this process's alone.
//
// The upstream answers every request with created, in_progress, the output
// item and content part, and one delta, then pauses (Step.After with Step.Hold)
// until told to go on. Once all streams are open at the upstream and every
// client has read an event, the relay's heap, goroutine stacks and RSS are
// compared with the same figures before the first stream.

// idleBudgetKiB is the relay's memory budget per open stream (ARCHITECTURE.md, "Performance budgets").
const idleBudgetKiB = 64

// fdReserve is what the relay process needs besides the streams' sockets:
// stdio, the listener, the pipes to its children, the runtime's epoll.
const fdReserve = 64

// h2cMaxStreams is the upstream's HTTP/2 concurrent stream limit in
// -idle-h2c mode; the relay's transport opens a new connection per this
// many streams.
const h2cMaxStreams = 1000

type idleConfig struct {
	streams int
	h2c     bool
	// target is what holds the streams: targetRelay, targetReverseProxy,
	// or idleFloor.
	target string
	// nested, if positive, nests a JSON schema this deep in every request.
	nested int
	childConfig
	// heapProfile, if set, is where the heap profile is written while the
	// streams are open (go tool pprof -sample_index=inuse_space).
	heapProfile string
}

// procStats is one sample of the relay process.
type procStats struct {
	heapInuse, stackInuse, rss uint64
	goroutines, fds            int
}

type idleResult struct {
	target             string
	nested             int
	requested, streams int
	upstreamProto      string
	notes              []string
	before, open       procStats
	finished, failed   int
	openTime           time.Duration
}

func (r *idleResult) perStream(before, open uint64) float64 {
	return (float64(open) - float64(before)) / 1024 / float64(r.streams)
}

func (r *idleResult) heapPerStream() float64 {
	return r.perStream(r.before.heapInuse, r.open.heapInuse)
}

func (r *idleResult) stackPerStream() float64 {
	return r.perStream(r.before.stackInuse, r.open.stackInuse)
}

func (r *idleResult) rssPerStream() float64 { return r.perStream(r.before.rss, r.open.rss) }

func (r *idleResult) goroutinesPerStream() float64 {
	return float64(r.open.goroutines-r.before.goroutines) / float64(r.streams)
}

func (r *idleResult) fdsPerStream() float64 {
	return float64(r.open.fds-r.before.fds) / float64(r.streams)
}

// sample frees what it can first, so that both samples count live memory
// (and RSS is not inflated by garbage not yet collected). It collects
// twice: each collection halves a goroutine stack that is less than a
// quarter used at most once, and a stream idle for minutes has seen
// several (one every two minutes at least), so a stack that grew while
// its request was read is counted at the size it keeps.
func sample() procStats {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return procStats{heapInuse: ms.HeapInuse, stackInuse: ms.StackInuse, rss: readRSS(),
		goroutines: runtime.NumGoroutine(), fds: countFDs()}
}

// readRSS is VmRSS from /proc/self/status, in bytes; 0 where there is none.
func readRSS() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func countFDs() int {
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0
	}
	return len(es)
}

// fdsNeeded is how many descriptors the relay process needs for n streams.
func fdsNeeded(n int, h2c bool) int {
	if h2c {
		return n + n/h2cMaxStreams + 1 + fdReserve
	}
	return 2*n + fdReserve
}

// runIdle measures cfg.streams open idle streams through the relay.
func runIdle(cfg idleConfig) (*idleResult, error) {
	res := &idleResult{requested: cfg.streams, streams: cfg.streams, upstreamProto: "HTTP/1.1"}
	if cfg.h2c {
		res.upstreamProto = "cleartext HTTP/2 (h2c)"
	}
	limit, err := raiseFDLimit()
	if err != nil {
		res.notes = append(res.notes, "could not raise RLIMIT_NOFILE: "+err.Error())
	}
	if limit > 0 && fdsNeeded(res.streams, cfg.h2c) > limit {
		n := (limit - fdReserve) / 2
		if cfg.h2c {
			n = (limit - fdReserve - 1) * h2cMaxStreams / (h2cMaxStreams + 1)
		}
		res.streams = n
		res.notes = append(res.notes, fmt.Sprintf(
			"capped at %d streams: the relay process holds 2 sockets per stream over HTTP/1.1 "+
				"(client side and upstream side) and its file descriptor limit is %d (the hard limit; "+
				"raising it needs privileges this process lacks). -idle-h2c multiplexes the upstream side.",
			n, limit))
	}
	if res.streams <= 0 {
		return nil, errors.New("no stream fits in the file descriptor limit")
	}

	up, err := startChild(cfg.childConfig, "upstream", "-accounts", strconv.Itoa(numAccounts), "-h2c="+strconv.FormatBool(cfg.h2c))
	if err != nil {
		return nil, err
	}
	defer up.stop()
	f, err := up.expect("listen", 30*time.Second)
	if err != nil {
		return nil, err
	}
	upURL := "http://" + f[0]

	tr := relay.NewTransport()
	if cfg.h2c {
		tr.Protocols = new(http.Protocols)
		tr.Protocols.SetUnencryptedHTTP2(true)
	}
	mux := http.NewServeMux()
	key := relayKey
	closeRelay := func(context.Context) {}
	if cfg.target == "" {
		cfg.target = targetRelay
	}
	switch cfg.target {
	case targetRelay:
		// The relay's default transport over HTTP/1.1; net/http's for h2c.
		var rtr http.RoundTripper = h1.New(tr)
		if cfg.h2c {
			rtr = tr
		}
		h, _ := newRelayHandler(func(a string) string { return upURL + "/" + a + "/v1" }, healthyAccounts(numAccounts),
			relayOptions{transport: rtr, streamIdle: time.Hour}) // no account limit; idle streams stay up
		mux.Handle("POST /v1/responses", h)
		closeRelay = func(ctx context.Context) { h.Shutdown(ctx); h.CloseIdleConnections() }
	case targetReverseProxy:
		rp, rptr := reverseProxyHandler(upURL + "/" + healthyAccounts(1)[0])
		mux.Handle("POST /v1/responses", rp)
		key = upstreamKey
		closeRelay = func(context.Context) { rptr.CloseIdleConnections() }
	case idleFloor:
		mux.Handle("POST /v1/responses", floorHandler(upURL+"/"+healthyAccounts(1)[0], tr))
		key = upstreamKey
		closeRelay = func(context.Context) { tr.CloseIdleConnections() }
	case idleRelayNetHTTP:
		h, _ := newRelayHandler(func(a string) string { return upURL + "/" + a + "/v1" }, healthyAccounts(numAccounts),
			relayOptions{transport: tr, streamIdle: time.Hour})
		mux.Handle("POST /v1/responses", h)
		closeRelay = func(ctx context.Context) { h.Shutdown(ctx); h.CloseIdleConnections() }
	case idleFloorH1:
		if cfg.h2c {
			return nil, fmt.Errorf("-idle-target %s speaks HTTP/1.1 to the upstream: no -idle-h2c", idleFloorH1)
		}
		h1tr := h1.New(tr)
		mux.Handle("POST /v1/responses", floorHandler(upURL+"/"+healthyAccounts(1)[0], h1tr))
		key = upstreamKey
		closeRelay = func(context.Context) { h1tr.CloseIdleConnections() }
	default:
		return nil, fmt.Errorf("-idle-target %q: want one of %s", cfg.target, strings.Join(idleTargets, ", "))
	}
	res.target, res.nested = cfg.target, cfg.nested
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	// Configured as relayd configures its server (examples/relayd), so the
	// figure is what an operator running it gets; none of these settings
	// changes what a connection holds while its stream is open.
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: 256 << 10, IdleTimeout: 2 * time.Minute}
	go srv.Serve(ln)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		closeRelay(ctx)
	}()

	res.before = sample()
	fmt.Fprintf(cfg.log, "relaybench: opening %d idle streams through the relay...\n", res.streams)
	t0 := time.Now()
	clients, err := startChild(cfg.childConfig, "clients", "-url", "http://"+ln.Addr().String()+"/v1/responses",
		"-n", strconv.Itoa(res.streams), "-key", key, "-nested", strconv.Itoa(cfg.nested))
	if err != nil {
		return nil, err
	}
	defer clients.stop()
	f, err = clients.expect("open", 5*time.Minute)
	if err != nil {
		return nil, err
	}
	opened, _ := strconv.Atoi(f[0])
	if opened != res.streams {
		return nil, fmt.Errorf("only %d of %d streams opened (%s)", opened, res.streams, strings.Join(f[1:], " "))
	}
	if _, err := up.send(fmt.Sprintf("wait %d", res.streams), "inflight", 2*time.Minute); err != nil {
		return nil, err
	}
	res.openTime = time.Since(t0)
	time.Sleep(500 * time.Millisecond) // let the relay's goroutines settle into their waits
	res.open = sample()
	if cfg.heapProfile != "" {
		if err := writeProfile("heap", cfg.heapProfile); err != nil {
			res.notes = append(res.notes, "heap profile: "+err.Error())
		}
	}

	if _, err := up.send("release", "released", 30*time.Second); err != nil {
		return nil, err
	}
	f, err = clients.expect("done", 2*time.Minute)
	if err != nil {
		return nil, err
	}
	res.finished, _ = strconv.Atoi(f[0])
	res.failed, _ = strconv.Atoi(f[1])
	if len(f) > 2 {
		res.notes = append(res.notes, "first client error: "+strings.Join(f[2:], " "))
	}
	return res, nil
}

// child is a child process spoken to by lines on its stdin and stdout.
type child struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
}

// childConfig says how to start child processes.
type childConfig struct {
	exe string    // the binary to run as the children
	log io.Writer // progress and the children's stderr
}

func startChild(cfg childConfig, role string, args ...string) (*child, error) {
	cmd := exec.Command(cfg.exe, args...)
	cmd.Env = append(os.Environ(), roleEnv+"="+role)
	cmd.Stderr = cfg.log
	setParentDeathSignal(cmd)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the %s process: %w", role, err)
	}
	c := &child{name: role, cmd: cmd, stdin: stdin, lines: make(chan string, 16)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
	}()
	return c, nil
}

// expect waits for a line "word field...", returning its fields.
func (c *child) expect(word string, timeout time.Duration) ([]string, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case line, ok := <-c.lines:
			if !ok {
				return nil, fmt.Errorf("the %s process ended before %q", c.name, word)
			}
			if f := strings.Fields(line); len(f) > 0 && f[0] == word {
				return f[1:], nil
			}
		case <-t.C:
			return nil, fmt.Errorf("the %s process did not say %q within %s", c.name, word, timeout)
		}
	}
}

// send writes a command and waits for its answer.
func (c *child) send(cmd, answer string, timeout time.Duration) ([]string, error) {
	if _, err := io.WriteString(c.stdin, cmd+"\n"); err != nil {
		return nil, fmt.Errorf("the %s process: %w", c.name, err)
	}
	return c.expect(answer, timeout)
}

// stop closes the child's stdin (its signal to exit) and waits for it,
// killing it if it lingers.
func (c *child) stop() {
	c.stdin.Close()
	done := make(chan struct{})
	go func() {
		for range c.lines { // drain, so the reader goroutine ends
		}
		c.cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		c.cmd.Process.Kill()
		<-done
	}
}

// idleFloor is the -idle-target that holds each stream with as little as
// net/http allows: floorHandler.
const idleFloor = "floor"

// idleTargets are the -idle-target values.
var idleTargets = []string{targetRelay, idleRelayNetHTTP, targetReverseProxy, idleFloor, idleFloorH1}

// idleFloorH1 is the -idle-target that holds each stream as floor does
// but over the relay's own HTTP/1.1 client (internal/h1) instead of
// net/http's transport: what net/http's server holds per open stream with
// an upstream client that keeps no goroutine and little buffer of its own.
const idleFloorH1 = "floor-h1"

// idleRelayNetHTTP is the -idle-target that is the relay over net/http's
// transport (relay.NewTransport, as a host that sets Handler.Transport to
// it has): what the relay's own client saves.
const idleRelayNetHTTP = "relay-nethttp"

// floorHandler forwards a request to upstream through tr and copies the
// answer back, a read of at most 512 bytes and a flush at a time, with no
// parsing, timer or state of its own: what any proxy built on net/http's
// server and transport holds per open stream, whatever it does besides.
func floorHandler(upstream string, tr http.RoundTripper) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		req, err := http.NewRequestWithContext(r.Context(), http.MethodPost, upstream+r.URL.Path, bytes.NewReader(body))
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		req.Header = r.Header.Clone()
		resp, err := tr.RoundTrip(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
		w.WriteHeader(resp.StatusCode)
		rc := http.NewResponseController(w)
		buf := make([]byte, 512)
		for {
			n, err := resp.Body.Read(buf)
			if n > 0 {
				if _, werr := w.Write(buf[:n]); werr != nil || rc.Flush() != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	})
}
