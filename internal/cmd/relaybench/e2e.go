package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// End-to-end mode (-relayd): the relayd example server runs as its own
// process, with a config file as an operator would write one (SQLite usage,
// optionally the spool and Redis), next to a reverseproxy child process and
// a fake upstream child process. Every proxy then has a process and a Go
// scheduler of its own, as in production, and the relaybench process holds
// only the clients.

// targetRelayd is the relayd process as a target; targetRelaydBase is
// another relayd binary (-relayd-base), to compare two builds in the same
// alternating rounds.
const (
	targetRelayd     = "relayd"
	targetRelaydBase = "relayd-base"
)

// e2eOptions are the -relayd flags.
type e2eOptions struct {
	// bin is the relayd binary; "build" in the flag builds it first.
	bin string
	// baseBin is the relayd binary of target relayd-base, or empty.
	baseBin string
	spool   bool
	redis   string // redis:// URL, or empty
	// baseNoRedis: relayd-base runs without redis, to measure what Redis
	// adds in the same rounds.
	baseNoRedis bool
	logLevel    string
	args        []string // more relayd flags
	// cleanup removes what resolving bin made (a built binary).
	cleanup func()
}

// relaydBuild is the -relayd value that builds relayd from the repository.
const relaydBuild = "build"

// resolveRelayd makes o.bin a runnable binary: with "build", go build of
// ./examples/relayd in the module root that `go env GOMOD` names.
func (o *e2eOptions) resolve(log io.Writer) error {
	o.cleanup = func() {}
	if o.bin != relaydBuild {
		if _, err := os.Stat(o.bin); err != nil {
			return fmt.Errorf("-relayd: %w", err)
		}
		return nil
	}
	out, err := exec.Command("go", "env", "GOMOD").Output()
	gomod := strings.TrimSpace(string(out))
	if err != nil || gomod == "" || gomod == os.DevNull {
		return fmt.Errorf("-relayd build: run relaybench inside the repository (go env GOMOD: %q, %v)", gomod, err)
	}
	root := filepath.Dir(gomod)
	dir, err := os.MkdirTemp("", "relaybench-relayd-bin-")
	if err != nil {
		return err
	}
	o.cleanup = func() { os.RemoveAll(dir) }
	o.bin = filepath.Join(dir, "relayd")
	fmt.Fprintf(log, "relaybench: building %s/examples/relayd\n", root)
	cmd := exec.Command("go", "build", "-o", o.bin, "./examples/relayd")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		o.cleanup()
		return fmt.Errorf("go build ./examples/relayd: %v\n%s", err, out)
	}
	return nil
}

// relaydConfig is the part of relayd's config file that the benchmark
// writes (examples/relayd/config.go documents the fields).
type relaydConfig struct {
	Listen           string          `json:"listen"`
	Accounts         []relaydAccount `json:"accounts"`
	APIKeys          []relaydKey     `json:"api_keys"`
	Usage            relaydUsage     `json:"usage"`
	WSMaxConnsPerKey int             `json:"ws_max_conns_per_key"`
	Redis            string          `json:"redis,omitempty"`
}

type relaydAccount struct {
	ID          string `json:"id"`
	BaseURL     string `json:"base_url"`
	APIKey      string `json:"api_key"`
	Concurrency int    `json:"concurrency"`
	WebSocket   bool   `json:"websocket"`
	WireAPI     string `json:"wire_api,omitempty"`
}

type relaydKey struct {
	Key    string `json:"key"`
	UserID string `json:"user_id"`
}

type relaydUsage struct {
	Driver string `json:"driver"`
	DSN    string `json:"dsn"`
	Spool  string `json:"spool,omitempty"`
}

// newRelaydConfig is relayd's config for the run of s: the same pool as
// the in-process relay target (each account with room for 1000 turns),
// one client key without a concurrency limit, usage in SQLite in dir.
func newRelaydConfig(s *setup, o *e2eOptions, name, dir, listen string) relaydConfig {
	redis := o.redis
	if name == targetRelaydBase && o.baseNoRedis {
		redis = ""
	}
	c := relaydConfig{
		Listen:           listen,
		APIKeys:          []relaydKey{{Key: relayKey, UserID: "bench-user"}},
		Usage:            relaydUsage{Driver: "sqlite", DSN: filepath.Join(dir, "usage.db")},
		WSMaxConnsPerKey: -1, // one key opens -concurrency connections
		Redis:            redis,
	}
	if o.spool {
		c.Usage.Spool = filepath.Join(dir, "spool")
	}
	for _, a := range s.relayAccounts {
		ra := relaydAccount{ID: a, BaseURL: s.baseURL(a), APIKey: upstreamKey, Concurrency: 1000, WebSocket: !s.chat()}
		if s.chat() {
			ra.WireAPI = "chat"
		}
		c.Accounts = append(c.Accounts, ra)
	}
	return c
}

// newRelayd starts relayd for the run of s and returns its endpoint. Its
// log (one line per request at the default level) goes to a file in its
// temporary directory, as a service manager would keep it, and is quoted
// when relayd fails to start.
func newRelayd(s *setup, o *e2eOptions, name, bin string) (*endpoint, error) {
	dir, err := os.MkdirTemp("", "relaybench-relayd-")
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(dir)
		}
	}()
	addr, err := freeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	cfg, err := json.MarshalIndent(newRelaydConfig(s, o, name, dir, addr), "", "  ")
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, "relayd.json")
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "relayd.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child has its own descriptor
	cmd := exec.Command(bin, append([]string{"-config", cfgPath, "-log-level", o.logLevel}, o.args...)...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	setParentDeathSignal(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting relayd: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}
	if err := waitHealthy("http://"+addr+"/healthz", exited, 30*time.Second); err != nil {
		stop()
		return nil, fmt.Errorf("relayd: %w; its log:\n%s", err, logTail(logPath, 2048))
	}
	ok = true
	root := "http://" + addr
	e := &endpoint{name: name, auth: bearer(relayKey), pid: cmd.Process.Pid,
		httpURLs: []string{root + "/v1/responses"},
		wsURLs:   []string{wsScheme(root) + "/v1/responses"},
	}
	e.close = func() {
		stop()
		os.RemoveAll(dir)
	}
	return e, nil
}

// freeLoopbackAddr returns a loopback address with a port free a moment
// ago, for a child that takes its listen address from a config file.
func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	return addr, ln.Close()
}

// waitHealthy polls url until it answers 200, the process exits or the
// timeout passes.
func waitHealthy(url string, exited <-chan struct{}, timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(timeout)
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not healthy within %s: %v", timeout, err)
		}
		select {
		case <-exited:
			return errors.New("exited before serving")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// logTail is the last n bytes of the file at path.
func logTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(bytes.TrimSpace(b))
}

// benchReverseProxyRole is the child process that serves the reverseproxy
// target in end-to-end mode.
const benchReverseProxyRole = "bench-reverseproxy"

// newReverseProxyChild starts the reverseproxy target of the run of s in
// a child process (this binary again).
func newReverseProxyChild(s *setup, proc *childConfig) (*endpoint, error) {
	c, err := startChild(*proc, benchReverseProxyRole, "-upstream", s.url)
	if err != nil {
		return nil, err
	}
	f, err := c.expect("listen", 30*time.Second)
	if err != nil || len(f) != 1 {
		c.stop()
		return nil, fmt.Errorf("the reverseproxy process: %v %q", err, f)
	}
	e := reverseProxyEndpoint(s, "http://"+f[0])
	e.pid, e.close = c.cmd.Process.Pid, c.stop
	return e, nil
}

// benchReverseProxyChild serves the reverseproxy target until its stdin
// closes.
func benchReverseProxyChild(args []string, in io.Reader, out io.Writer) error {
	fs := flag.NewFlagSet(benchReverseProxyRole, flag.ContinueOnError)
	upstream := fs.String("upstream", "", "the upstream's root URL")
	if err := fs.Parse(args); err != nil {
		return err
	}
	h, tr := reverseProxyHandler(*upstream)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	defer func() {
		srv.Close()
		tr.CloseIdleConnections()
	}()
	fmt.Fprintln(out, "listen", ln.Addr())
	_, err = io.Copy(io.Discard, in) // until the parent closes stdin
	return err
}

// benchRelayRole is the child process that serves the relay target (the
// library with in-memory defaults) in end-to-end mode: what relayd adds
// over the library is relayd's row against this one.
const benchRelayRole = "bench-relay"

// newRelayChild starts the relay target of the run of s in a child
// process (this binary again).
func newRelayChild(s *setup, proc *childConfig) (*endpoint, error) {
	c, err := startChild(*proc, benchRelayRole, "-upstream", s.url, "-workload", string(s.workload))
	if err != nil {
		return nil, err
	}
	f, err := c.expect("listen", 30*time.Second)
	if err != nil || len(f) != 1 {
		c.stop()
		return nil, fmt.Errorf("the relay process: %v %q", err, f)
	}
	root := "http://" + f[0]
	return &endpoint{name: targetRelay, auth: bearer(relayKey), pid: c.cmd.Process.Pid, close: c.stop,
		httpURLs: []string{root + "/v1/responses"},
		wsURLs:   []string{wsScheme(root) + "/v1/responses"},
	}, nil
}

// benchRelayChild serves the relay target until its stdin closes.
func benchRelayChild(args []string, in io.Reader, out io.Writer) error {
	fs := flag.NewFlagSet(benchRelayRole, flag.ContinueOnError)
	upstream := fs.String("upstream", "", "the upstream's root URL")
	wl := fs.String("workload", string(wlStream), "workload")
	if err := fs.Parse(args); err != nil {
		return err
	}
	s := &setup{workload: workload(*wl), url: *upstream}
	s.direct, s.relayAccounts = accountsFor(s.workload)
	e := newRelay(s)
	defer e.close()
	fmt.Fprintln(out, "listen", strings.TrimPrefix(e.httpURLs[0][:len(e.httpURLs[0])-len("/v1/responses")], "http://"))
	_, err := io.Copy(io.Discard, in) // until the parent closes stdin
	return err
}

// newE2EEndpoint is target t of the run of s in end-to-end mode: every
// proxy in a process of its own.
func newE2EEndpoint(t string, s *setup, o *e2eOptions, proc *childConfig) (*endpoint, error) {
	switch t {
	case targetRelayd:
		return newRelayd(s, o, t, o.bin)
	case targetRelaydBase:
		return newRelayd(s, o, t, o.baseBin)
	case targetReverseProxy:
		return newReverseProxyChild(s, proc)
	case targetRelay:
		return newRelayChild(s, proc)
	}
	return newEndpoint(t, s), nil
}

// e2eTargets are the targets of end-to-end mode without -targets.
var e2eTargets = []string{targetDirect, targetReverseProxy, targetRelayd}

// describe names relayd's setup for the table's heading.
func (o *e2eOptions) describe() string {
	d := "SQLite usage"
	if o.spool {
		d += " through the spool"
	}
	if o.redis != "" {
		d += ", Redis"
	} else {
		d += ", no Redis"
	}
	return d + ", log level " + o.logLevel
}
