package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relaykit/responsesrelay/relay/relaytest"
)

// roleEnv names the role of a child process of -idle mode. An environment
// variable rather than a flag, so that a test binary can be a child too
// (its TestMain looks at it before the testing flags are parsed).
const roleEnv = "RELAYBENCH_ROLE"

// childProfileEnv, when set in relaybench's environment, names a file
// prefix: every child process writes a CPU profile of its whole life to
// PREFIX.ROLE.PID (to compare a proxy's profile with ReverseProxy's in
// end-to-end mode, where each runs in a process of its own).
const childProfileEnv = "RELAYBENCH_CHILD_CPUPROFILE"

// childMain runs this process as the upstream or the clients of -idle mode
// and returns the exit code.
func childMain(role string, args []string) int {
	raiseFDLimit() // the children hold one socket per stream each
	if prefix := os.Getenv(childProfileEnv); prefix != "" {
		f, err := os.Create(fmt.Sprintf("%s.%s.%d", prefix, role, os.Getpid()))
		if err == nil && pprof.StartCPUProfile(f) == nil {
			defer func() {
				pprof.StopCPUProfile()
				f.Close()
			}()
		}
	}
	var err error
	switch role {
	case "upstream":
		err = upstreamChild(args, os.Stdin, os.Stdout)
	case "clients":
		err = clientsChild(args, os.Stdout)
	case benchUpstreamRole:
		err = benchUpstreamChild(args, os.Stdin, os.Stdout)
	case benchRelayRole:
		err = benchRelayChild(args, os.Stdin, os.Stdout)
	case benchReverseProxyRole:
		err = benchReverseProxyChild(args, os.Stdin, os.Stdout)
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "relaybench %s: %v\n", role, err)
		return 1
	}
	return 0
}

// upstreamChild serves the fake upstream until its stdin closes. Every
// stream pauses after its first delta until the "release" command. Other
// commands: "wait N" answers "inflight N" once N requests are in flight.
func upstreamChild(args []string, in io.Reader, out io.Writer) error {
	fs := flag.NewFlagSet("upstream", flag.ContinueOnError)
	accounts := fs.Int("accounts", numAccounts, "accounts acct-0... to serve")
	h2c := fs.Bool("h2c", false, "also serve cleartext HTTP/2")
	if err := fs.Parse(args); err != nil {
		return err
	}
	up := relaytest.New()
	up.NoLog = true
	resume := make(chan struct{})
	names := healthyAccounts(*accounts)
	for _, a := range names {
		up.SetKey(a, upstreamKey)
		// created, in_progress, output_item.added, content_part.added and one
		// delta, so the relay has committed the stream and forwarded them.
		up.SetDefault(a, relaytest.Step{After: 5, Hold: resume})
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: up}
	if *h2c {
		srv.Protocols = new(http.Protocols)
		srv.Protocols.SetHTTP1(true)
		srv.Protocols.SetUnencryptedHTTP2(true)
		srv.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: h2cMaxStreams}
	}
	go srv.Serve(ln)
	defer srv.Close()
	fmt.Fprintln(out, "listen", ln.Addr())

	inFlight := func() int {
		n := 0
		for _, a := range names {
			n += up.InFlight(a)
		}
		return n
	}
	released := false
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 2 && f[0] == "wait":
			var want int
			fmt.Sscan(f[1], &want)
			deadline := time.Now().Add(2 * time.Minute)
			for inFlight() != want && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			fmt.Fprintln(out, "inflight", inFlight())
		case len(f) == 1 && f[0] == "release":
			if !released {
				close(resume)
				released = true
			}
			fmt.Fprintln(out, "released")
		}
	}
	return sc.Err()
}

// clientsChild opens n streaming requests, says "open OK FAILED" once
// every one has read its first event (or failed), reads them all to the
// end and says "done COMPLETED FAILED [first error]".
func clientsChild(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("clients", flag.ContinueOnError)
	url := fs.String("url", "", "the relay's responses URL")
	n := fs.Int("n", 0, "streams")
	key := fs.String("key", "", "bearer key")
	parallel := fs.Int("parallel", 256, "streams being opened at once")
	nested := fs.Int("nested", 0, "nest a JSON schema in each request this deep")
	if err := fs.Parse(args); err != nil {
		return err
	}
	body := streamBody
	if *nested > 0 {
		body = nestedStreamBody(*nested)
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}

	var (
		opened, openFailed, completed, failed atomic.Int64
		firstErr                              atomic.Value
		wg, openWG                            sync.WaitGroup
	)
	fail := func(err error) {
		failed.Add(1)
		firstErr.CompareAndSwap(nil, err.Error())
	}
	sem := make(chan struct{}, *parallel)
	openWG.Add(*n)
	for range *n {
		sem <- struct{}{}
		wg.Go(func() {
			openDone := false
			markOpen := func(ok bool) {
				if openDone {
					return
				}
				openDone = true
				if ok {
					opened.Add(1)
				} else {
					openFailed.Add(1)
				}
				<-sem
				openWG.Done()
			}
			defer markOpen(false)
			req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, *url, bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+*key)
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			if err != nil {
				fail(err)
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
				fail(fmt.Errorf("status %d: %s", resp.StatusCode, bytes.TrimSpace(b)))
				return
			}
			br := bufio.NewReader(resp.Body)
			if err := readFirstEvent(br); err != nil {
				fail(fmt.Errorf("before the first event: %w", err))
				return
			}
			markOpen(true)
			_, last, err := readSSE(br, nil)
			if err == nil && last != "response.completed" {
				err = fmt.Errorf("stream ended with %q", last)
			}
			if err != nil {
				fail(err)
				return
			}
			completed.Add(1)
		})
	}
	openWG.Wait()
	fmt.Fprintln(out, "open", opened.Load(), openFailed.Load())
	wg.Wait()
	line := fmt.Sprintf("done %d %d", completed.Load(), failed.Load())
	if e, ok := firstErr.Load().(string); ok {
		line += " " + strings.ReplaceAll(e, "\n", " ")
	}
	fmt.Fprintln(out, line)
	return nil
}

// readFirstEvent reads up to the end of the first SSE event, skipping
// comments.
func readFirstEvent(br *bufio.Reader) error {
	hasData := false
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case line == "" && hasData:
			return nil
		case strings.HasPrefix(line, "data:"):
			hasData = true
		}
	}
}

// nestedStreamBody is streamBody with a structured-output schema nested
// depth objects deep: a request whose validation takes the relay's stack
// deep before its stream opens.
func nestedStreamBody(depth int) []byte {
	b := []byte(`{"model":"gpt-5","stream":true,"store":false,"input":"hello there","text":{"format":{"type":"json_schema","name":"nested","schema":`)
	b = append(b, strings.Repeat(`{"a":`, depth)...)
	b = append(b, '1')
	b = append(b, strings.Repeat("}", depth)...)
	return append(b, "}}}"...)
}
