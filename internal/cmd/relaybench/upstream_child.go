package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/relaykit/responsesrelay/relay/relaytest"
)

// With -upstream-process each run's fake upstream is a child process: the
// upstream's goroutines then do not share the benchmark's Go scheduler with
// the proxy and the clients (they still share the machine's cores).
const benchUpstreamRole = "bench-upstream"

// newChildSetup starts the upstream of one run in a child process.
func newChildSetup(w workload, deltas int, pace time.Duration, cfg *childConfig) (*setup, error) {
	c, err := startChild(*cfg, benchUpstreamRole, "-workload", string(w), "-deltas", strconv.Itoa(deltas), "-pace", pace.String())
	if err != nil {
		return nil, err
	}
	f, err := c.expect("listen", 30*time.Second)
	if err != nil || len(f) != 1 {
		c.stop()
		return nil, fmt.Errorf("the upstream process: %v %q", err, f)
	}
	s := &setup{workload: w, url: "http://" + f[0], pid: c.cmd.Process.Pid, close: c.stop}
	s.direct, s.relayAccounts = accountsFor(w)
	return s, nil
}

// benchUpstreamChild serves the fake upstream of one run until its stdin
// closes.
func benchUpstreamChild(args []string, in io.Reader, out io.Writer) error {
	fs := flag.NewFlagSet(benchUpstreamRole, flag.ContinueOnError)
	wl := fs.String("workload", string(wlStream), "workload")
	deltas := fs.Int("deltas", 1, "deltas per streamed turn")
	pace := fs.Duration("pace", 0, "time between streamed events")
	if err := fs.Parse(args); err != nil {
		return err
	}
	up := relaytest.New()
	configureUpstream(up, workload(*wl), *deltas, *pace)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: up}
	go srv.Serve(ln)
	defer srv.Close()
	fmt.Fprintln(out, "listen", ln.Addr())
	_, err = io.Copy(io.Discard, in) // until the parent closes stdin
	return err
}
