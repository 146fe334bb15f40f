package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"time"
	"unsafe"

	"github.com/coder/websocket"
	"github.com/relaykit/responsesrelay/internal/cputime"
	"github.com/relaykit/responsesrelay/internal/stamp"
	"github.com/tidwall/gjson"
)

// workload is one kind of traffic.
type workload string

const (
	wlJSON     workload = "json"     // non-streaming POST
	wlStream   workload = "stream"   // streaming POST
	wlFailover workload = "failover" // streaming POST, one relay account in ten answers 429
	wlWS       workload = "ws"       // turns on a reused WebSocket
	// wlChatStream is a streaming Chat Completions upstream: direct and
	// reverseproxy clients speak Chat Completions to it, the relay's
	// clients speak Responses to a relay whose accounts are chat ones.
	wlChatStream workload = "chat-stream"
)

var allWorkloads = []workload{wlJSON, wlStream, wlFailover, wlWS, wlChatStream}

// defaultWorkloads are those run without -workloads.
const defaultWorkloads = "json,stream,failover,ws"

// framingEvents is how many events a text turn of the fake has besides its
// deltas: created, in_progress, output_item.added, content_part.added,
// output_text.done, content_part.done, output_item.done, completed.
const framingEvents = 8

// deltasFor is the delta count that makes a turn of events events.
func deltasFor(events int) int { return max(events-framingEvents, 1) }

// store:false keeps the fake from storing a response per request and the
// relay from binding each one, as Codex does.
var (
	jsonBody   = []byte(`{"model":"gpt-5","store":false,"input":"hello there"}`)
	streamBody = []byte(`{"model":"gpt-5","stream":true,"store":false,"input":"hello there"}`)
	wsMessage  = []byte(`{"type":"response.create","model":"gpt-5","store":false,"input":"hello there"}`)
)

// runConfig is one run: a workload against one endpoint.
type runConfig struct {
	workload    workload
	concurrency int
	duration    time.Duration
	// events is the number of events a streamed turn must have; a turn
	// with another count is an error.
	events int
	// chatChunks is the number of data: lines a Chat Completions stream
	// must have (chat-stream's direct and reverseproxy).
	chatChunks int
	// pace > 0: the upstream spaces events by pace and stamps them, and the
	// clients record how long each delta took to reach them.
	pace time.Duration
	// pids, when not empty, are the processes whose CPU time and syscalls
	// the run measures (end-to-end mode: the upstream and the proxy), in
	// place of this process's.
	pids []int
}

// worker is one client goroutine's state, reused across its requests so
// that the client adds as few allocations as it can.
type worker struct {
	id       int
	hist     histogram
	evHist   histogram // per-event delivery, with pace
	requests int64
	errors   int64
	events   int64
	firstErr error
	br       *bufio.Reader
	buf      bytes.Buffer
	// onData is w.chatData as a func, made once so that a request does
	// not allocate it; chatDone and chatUsage are what it saw of the
	// current chat stream.
	onData              func([]byte)
	pace                bool
	chatDone, chatUsage bool
}

func (w *worker) fail(err error) {
	w.errors++
	if w.firstErr == nil {
		w.firstErr = err
	}
}

// run drives cfg.concurrency workers against e for cfg.duration and
// returns what they measured. Allocation counts cover the whole process
// between the start and the end of the traffic.
func run(cfg runConfig, e *endpoint) *result {
	client := &http.Client{Transport: &http.Transport{
		MaxIdleConnsPerHost: cfg.concurrency,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}}
	defer client.CloseIdleConnections()

	workers := make([]*worker, cfg.concurrency)
	for i := range workers {
		w := &worker{id: i, br: bufio.NewReaderSize(nil, 16<<10), pace: cfg.pace > 0}
		w.onData = w.chatData
		workers[i] = w
	}
	// A request that hangs through a bug must not hang the benchmark.
	ctx, cancel := context.WithTimeout(context.Background(), cfg.duration+time.Minute)
	defer cancel()

	runtime.GC() // start from a clean heap, so one run's garbage does not bill the next
	before, cpu0, sys0 := readMem(), cfg.cpuTime(), cfg.syscalls()
	start := time.Now()
	deadline := start.Add(cfg.duration)
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Go(func() {
			switch cfg.workload {
			case wlWS:
				w.runWS(ctx, client, e, cfg, deadline)
			default:
				w.runHTTP(ctx, client, e, cfg, deadline)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	after, cpu1, sys1 := readMem(), cfg.cpuTime(), cfg.syscalls()

	r := &result{workload: string(cfg.workload), target: e.name, elapsed: elapsed, hist: new(histogram), evHist: new(histogram),
		mallocs: after.mallocs - before.mallocs, bytes: after.totalAlloc - before.totalAlloc, cpu: cpu1 - cpu0, syscalls: sys1 - sys0}
	for _, w := range workers {
		r.hist.merge(&w.hist)
		r.evHist.merge(&w.evHist)
		r.requests += w.requests
		r.errors += w.errors
		r.events += w.events
		if w.firstErr != nil && r.firstErr == "" {
			r.firstErr = w.firstErr.Error()
		}
	}
	if e.attempts != nil && cfg.workload != wlWS { // WebSocket turns go over upstream sockets, not the transport
		r.hasAttempts = true
		r.relayAttempts, r.relay429 = e.attempts.attempts.Load(), e.attempts.r429s.Load()
	}
	return r
}

// cpuTime is the CPU time of the measured processes.
func (cfg runConfig) cpuTime() time.Duration {
	if len(cfg.pids) == 0 {
		return cputime.Process()
	}
	var d time.Duration
	for _, p := range cfg.pids {
		d += procCPU(p)
	}
	return d
}

// syscalls is the read and write syscalls of the measured processes.
func (cfg runConfig) syscalls() int64 {
	if len(cfg.pids) == 0 {
		return syscallCount()
	}
	var n int64
	for _, p := range cfg.pids {
		n += procSyscalls(strconv.Itoa(p))
	}
	return n
}

// runHTTP sends POST requests one after the other until the deadline,
// spreading them over the endpoint's URLs.
func (w *worker) runHTTP(ctx context.Context, client *http.Client, e *endpoint, cfg runConfig, deadline time.Time) {
	body := streamBody
	switch {
	case cfg.workload == wlJSON:
		body = jsonBody
	case e.chat:
		body = chatStreamBody
	}
	for n := w.id; time.Now().Before(deadline) && ctx.Err() == nil; n++ {
		t0 := time.Now()
		var events int
		var err error
		if e.chat {
			events, err = w.postChat(ctx, client, e.httpURLs[n%len(e.httpURLs)], e.auth, body, cfg)
		} else {
			events, err = w.post(ctx, client, e.httpURLs[n%len(e.httpURLs)], e.auth, body, cfg)
		}
		w.hist.record(time.Since(t0))
		w.requests++
		w.events += int64(events)
		if err != nil {
			w.fail(err)
		}
	}
}

// send sends one POST and returns its answer, which must be a 200.
func send(ctx context.Context, client *http.Client, url string, auth http.Header, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header["Authorization"] = auth["Authorization"]
	req.Header["Content-Type"] = []string{"application/json"}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		return nil, fmt.Errorf("status %d: %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	return resp, nil
}

// post sends one request and reads its whole answer, checking it.
func (w *worker) post(ctx context.Context, client *http.Client, url string, auth http.Header, body []byte, cfg runConfig) (int, error) {
	resp, err := send(ctx, client, url, auth, body)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if cfg.workload == wlJSON {
		w.buf.Reset()
		if _, err := w.buf.ReadFrom(resp.Body); err != nil {
			return 0, fmt.Errorf("reading JSON answer: %w", err)
		}
		if st := peekString(w.buf.Bytes(), "status"); st != "completed" {
			return 0, fmt.Errorf("JSON answer with status %q (%d bytes)", st, w.buf.Len())
		}
		return 0, nil
	}
	w.br.Reset(resp.Body)
	var stamp func([]byte)
	if cfg.pace > 0 {
		stamp = w.recordStamp
	}
	n, last, err := readSSE(w.br, stamp)
	w.br.Reset(nil)
	if err != nil {
		return n, fmt.Errorf("stream cut after %d events: %w", n, err)
	}
	if last != "response.completed" || n != cfg.events {
		return n, fmt.Errorf("stream of %d events (want %d) ended with %q", n, cfg.events, last)
	}
	return n, nil
}

var (
	prefixEvent = []byte("event:")
	prefixData  = []byte("data:")
)

// recordStamp records how long ago a stamped event (relaytest Step.Events
// "stamp") was written; other events are ignored.
func (w *worker) recordStamp(event []byte) {
	if sent, ok := stamp.Parse(event); ok {
		w.evHist.record(time.Since(sent))
	}
}

// readSSE reads an SSE body to its end. It returns the number of events,
// the type of the last one (from its event: line) and any read error,
// including a body that ends inside an event. Comments (": ping") are
// skipped. It keeps only the current event's type, so that the client adds
// few allocations of its own. stamp, when not nil, gets each data: line's
// payload (of lines that fit the reader's buffer).
func readSSE(br *bufio.Reader, stamp func(data []byte)) (n int, last string, err error) {
	var typ, lastTyp [64]byte
	typLen, lastLen, hasData := 0, 0, false
	for {
		line, err := br.ReadSlice('\n')
		long := errors.Is(err, bufio.ErrBufferFull)
		if err != nil && !long {
			if err == io.EOF && len(line) == 0 && !hasData {
				return n, string(lastTyp[:lastLen]), nil
			}
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return n, "", err
		}
		// Look at the line before the next read reuses the buffer; of a
		// line longer than the buffer only the start matters.
		line = bytes.TrimRight(line, "\r\n")
		switch {
		case len(line) == 0 && !long:
			if hasData {
				n++
				lastTyp, lastLen = typ, typLen
				typLen, hasData = 0, false
			}
		case bytes.HasPrefix(line, prefixEvent):
			typLen = copy(typ[:], bytes.TrimSpace(line[len(prefixEvent):]))
		case bytes.HasPrefix(line, prefixData):
			hasData = true
			if stamp != nil && !long {
				stamp(line[len(prefixData):])
			}
		}
		for long {
			_, err = br.ReadSlice('\n')
			long = errors.Is(err, bufio.ErrBufferFull)
			if err != nil && !long {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return n, "", err
			}
		}
	}
}

// runWS opens one WebSocket and runs turns on it until the deadline. A
// failed turn or dial is counted as an error and the connection replaced.
// Dialing is not part of a turn's latency.
func (w *worker) runWS(ctx context.Context, client *http.Client, e *endpoint, cfg runConfig, deadline time.Time) {
	url := e.wsURLs[w.id%len(e.wsURLs)]
	var c *websocket.Conn
	defer func() {
		if c != nil {
			c.Close(websocket.StatusNormalClosure, "")
		}
	}()
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if c == nil {
			var err error
			c, _, err = websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: client, HTTPHeader: e.auth})
			if err != nil {
				w.requests++
				w.fail(fmt.Errorf("dial: %w", err))
				continue
			}
			c.SetReadLimit(64 << 20)
			// Turns read and write with a context that never ends, since
			// coder/websocket arms a context.AfterFunc per read for one that
			// can (two allocations per event, in every target); the run's
			// hard timeout closes the connection instead.
			conn := c
			stop := context.AfterFunc(ctx, func() { conn.CloseNow() })
			defer stop()
		}
		t0 := time.Now()
		n, err := w.turn(c, cfg)
		w.hist.record(time.Since(t0))
		w.requests++
		w.events += int64(n)
		if err != nil {
			w.fail(err)
			c.CloseNow()
			c = nil
		}
	}
}

// turn sends one response.create and reads events to the terminal one.
func (w *worker) turn(c *websocket.Conn, cfg runConfig) (int, error) {
	ctx := context.Background()
	if err := c.Write(ctx, websocket.MessageText, wsMessage); err != nil {
		return 0, err
	}
	for n := 1; ; n++ {
		_, r, err := c.Reader(ctx)
		if err == nil {
			w.buf.Reset()
			_, err = w.buf.ReadFrom(r)
		}
		if err != nil {
			return n - 1, fmt.Errorf("turn cut after %d events: %w", n-1, err)
		}
		if cfg.pace > 0 {
			w.recordStamp(w.buf.Bytes())
		}
		switch typ := peekString(w.buf.Bytes(), "type"); typ {
		case "response.completed":
			if n != cfg.events {
				return n, fmt.Errorf("turn of %d events (want %d)", n, cfg.events)
			}
			return n, nil
		case "response.failed", "response.incomplete", "error":
			return n, fmt.Errorf("turn ended with %s: %.300s", typ, w.buf.Bytes())
		}
	}
}

// peekString returns the string at path in the JSON b without copying it:
// the result aliases b and must be used before b changes. It spares the
// client an allocation per event that would blur the comparison.
func peekString(b []byte, path string) string {
	if len(b) == 0 {
		return ""
	}
	return gjson.Get(unsafe.String(unsafe.SliceData(b), len(b)), path).Str
}
