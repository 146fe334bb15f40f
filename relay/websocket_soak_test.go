package relay_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/concurrency"
	"github.com/relaykit/responsesrelay/internal/leakcheck"
	"github.com/relaykit/responsesrelay/relay"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/relaykit/responsesrelay/scheduler"
	"github.com/tidwall/gjson"
)

// The soak test runs mixed HTTP, SSE and WebSocket traffic against a relay
// with 10 % faulty accounts and clients that leave at random, then checks
// that everything came back: slots, goroutines, heap, and one usage record
// per turn that reached an upstream. It is opt-in:
//
//	RELAY_SOAK=1 go test -run TestSoak -v ./relay
//
// RELAY_SOAK_DURATION (a Go duration, at most 2m) sets the traffic time;
// the default is 60s.

const (
	soakUsers    = 8
	soakAccounts = 20 // a00..a19; a00..a09 have upstream WebSockets
	soakWorkers  = 32
)

// soakFaults are what the faulty accounts answer, picked at random per
// request.
var soakFaults = []relaytest.Step{
	{Status: 429, Header: http.Header{"Retry-After": {"1"}}}, {Status: 500}, {Status: 502}, {Status: 503}, {Status: 529},
	{Status: 401}, {Cut: true}, {After: 5, Cut: true}, {End: "refused server_is_overloaded"},
	{End: "error"}, {After: 4, Hold: make(chan struct{})}, {End: "none"}, {FirstTokenDelay: 50 * time.Millisecond}, {Hold: make(chan struct{})},
	{End: "incomplete max_output_tokens"}, {End: "failed server_error"}, {},
}

// soakSink keeps what the checks need of each record.
type soakSink struct {
	mu   sync.Mutex
	recs []billing.Usage
}

func (s *soakSink) Record(_ context.Context, u billing.Usage) error {
	s.mu.Lock()
	s.recs = append(s.recs, u)
	s.mu.Unlock()
	return nil
}

type soakStats struct {
	turns, httpTurns, sseTurns, wsTurns, left, bad atomic.Int64
	badSample                                      sync.Once
	badText                                        atomic.Value
}

func (s *soakStats) fail(format string, args ...any) {
	s.bad.Add(1)
	s.badSample.Do(func() { s.badText.Store(fmt.Sprintf(format, args...)) })
}

func soakDuration(t *testing.T) time.Duration {
	d := 60 * time.Second
	if v := os.Getenv("RELAY_SOAK_DURATION"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			t.Fatalf("RELAY_SOAK_DURATION: %v", err)
		}
	}
	return min(d, 2*time.Minute)
}

func TestSoak(t *testing.T) {
	if testing.Short() || os.Getenv("RELAY_SOAK") != "1" {
		t.Skip("soak test: set RELAY_SOAK=1 (and run without -short)")
	}
	leakcheck.Check(t)
	duration := soakDuration(t)
	runtime.GC()
	goroutinesBefore := runtime.NumGoroutine()

	up := relaytest.NewServer()
	pool := scheduler.NewStaticPool()
	var ids []string
	faulty := []string{"a00", "a10"} // one with upstream WebSockets, one without
	for i := 0; i < soakAccounts; i++ {
		id := fmt.Sprintf("a%02d", i)
		ids = append(ids, id)
		// The faulty accounts are preferred, so that they keep getting
		// turns between their (short) cooldowns instead of being avoided
		// for good by the scheduler's error rate.
		prio := 1
		if i%10 == 0 {
			prio = 0
		}
		pool.Add("g", &scheduler.Account{ID: id, BaseURL: up.BaseURL(id), Concurrency: 16, WebSocket: i < soakAccounts/2, Priority: prio})
	}
	keys := scheduler.StaticKeys{}
	for _, id := range ids {
		keys[id] = "sk-soak-" + id
	}
	sched := &scheduler.Scheduler{Pool: pool, Health: scheduler.HealthPolicy{MaxCooldown: 10 * time.Millisecond}, StickyTTL: 2 * time.Second,
		Logger: slog.New(slog.DiscardHandler)}
	sink := &soakSink{}
	lim := concurrency.NewMemory()
	rh := &relay.Handler{
		Limiter:   lim,
		Scheduler: sched, Credentials: keys, Usage: sink, Logger: slog.New(slog.DiscardHandler),
		// Long enough that a loaded loopback never trips them on a healthy
		// answer (the answer would be billed upstream yet unseen here).
		StreamIdleTimeout: time.Second, JSONHeaderTimeout: time.Second,
		DrainTimeout: 2 * time.Second, KeepAlive: 50 * time.Millisecond,
		Authenticate: func(r *http.Request) (*relay.Subject, error) {
			u, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer soak-user-")
			if !ok {
				return nil, nil
			}
			return &relay.Subject{UserID: "u" + u, APIKeyID: "k" + u, GroupID: "g", Concurrency: 8}, nil
		},
	}
	rh.WebSocket = &relay.WebSocketOptions{}
	srv := httptest.NewServer(rh)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: soakWorkers}}

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	heapBefore := ms.HeapAlloc

	start := time.Now()
	end := start.Add(duration)
	stopChaos := make(chan struct{})
	chaosDone := make(chan struct{})
	go func() { // faulty accounts change their fault all the time
		defer close(chaosDone)
		r := rand.New(rand.NewPCG(1, 2))
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopChaos:
				return
			case <-tick.C:
				for _, id := range faulty {
					up.SetDefault(id, soakFaults[r.IntN(len(soakFaults))])
				}
			}
		}
	}()
	var stats soakStats
	var seq atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < soakWorkers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 7))
			for time.Now().Before(end) {
				user := r.IntN(soakUsers)
				switch p := r.IntN(10); {
				case p < 4:
					soakHTTP(srv.URL, client, user, true, r, &seq, &stats)
				case p < 7:
					soakHTTP(srv.URL, client, user, false, r, &seq, &stats)
				default:
					soakWS(srv.URL, user, 1+r.IntN(4), r, &seq, &stats)
				}
			}
		}()
	}
	wg.Wait()
	close(stopChaos)
	<-chaosDone
	traffic := time.Since(start)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := rh.Shutdown(ctx); err != nil {
		t.Errorf("relay shutdown: %v (%d active)", err, rh.Active())
	}
	srv.Close()

	// Slots: nothing held anywhere.
	for u := 0; u < soakUsers; u++ {
		if n := lim.InFlight(fmt.Sprintf("user:u%d", u)); n != 0 {
			t.Errorf("user u%d holds %d slots", u, n)
		}
	}
	for _, id := range ids {
		if n := schedInFlight(sched, id); n != 0 {
			t.Errorf("account %s holds %d slots", id, n)
		}
	}
	if relay.WebSocketConns(rh) != 0 || rh.Active() != 0 {
		t.Errorf("open connections %d, active turns %d", relay.WebSocketConns(rh), rh.Active())
	}

	// Usage: one record per turn that reached an upstream, none lost.
	// Close waits for the fake's handlers, so that every request has its
	// answer logged.
	up.Close()
	reqs, served := up.Requests(), up.Served()
	sink.mu.Lock()
	recs := sink.recs
	sink.recs = nil
	sink.mu.Unlock()
	reached, attempts := soakReached(reqs, served)
	byResp := map[string]billing.Usage{}
	seen := map[string]bool{}
	statuses := map[string]int{}
	for _, u := range recs {
		if seen[u.RequestID] {
			t.Errorf("two records for request %s", u.RequestID)
		}
		seen[u.RequestID] = true
		statuses[u.Status]++
		if u.ResponseID != "" {
			byResp[u.ResponseID] = u
		}
	}
	if len(recs) != reached {
		t.Errorf("%d usage records for %d turns that reached an upstream", len(recs), reached)
	}
	lost := 0
	for _, s := range served {
		if s.ResponseID == "" || (s.Status != "completed" && s.Status != "incomplete") || s.Usage.Input == 0 {
			continue
		}
		u, ok := byResp[s.ResponseID]
		if !ok || u.InputTokens != s.Usage.Input || u.OutputTokens != s.Usage.Output || u.CachedInputTokens != s.Usage.Cached {
			lost++
			if lost <= 3 {
				t.Errorf("usage of %s (%+v, request %s) recorded as %+v (found %v)", s.ResponseID, s, soakRequest(reqs, s.Seq), u, ok)
			}
		}
	}
	if n := stats.bad.Load(); n > 0 {
		t.Errorf("%d client-visible answers broke the contract; first: %v", n, stats.badText.Load())
	}

	// Heap and goroutines once everything is closed and the logs dropped.
	nreqs, nserved, nrecs := len(reqs), len(served), len(recs)
	reqs, served, recs, byResp, seen = nil, nil, nil, nil, nil
	up.Reset()
	rh.CloseIdleConnections()
	client.CloseIdleConnections()
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > goroutinesBefore && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	goroutinesAfter := runtime.NumGoroutine()
	if goroutinesAfter > goroutinesBefore {
		t.Errorf("goroutines: %d before, %d after", goroutinesBefore, goroutinesAfter)
	}
	// The handler's conversation records (tens of MiB after a minute of
	// turns) go with the handler, which a timer or connection of the last
	// turns can reach for a moment after Shutdown (one run in six read
	// 39.6 MiB here once): the heap is read until it is within the bound,
	// for at most 5 s, as the goroutines are above. A leak stays over it.
	const heapBound = 16 << 20
	var heapAfter uint64
	for deadline := time.Now().Add(5 * time.Second); ; {
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&ms)
		heapAfter = ms.HeapAlloc
		if heapAfter <= heapBefore+heapBound || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if heapAfter > heapBefore+heapBound {
		t.Errorf("heap %d MiB after, %d MiB before: over the %d MiB bound", heapAfter>>20, heapBefore>>20, heapBound>>20)
	}
	t.Logf("soak: %v of traffic, %d turns (%d HTTP JSON, %d SSE, %d WebSocket; %d clients left early)",
		traffic.Round(time.Millisecond), stats.turns.Load(), stats.httpTurns.Load(), stats.sseTurns.Load(), stats.wsTurns.Load(), stats.left.Load())
	t.Logf("soak: %d upstream requests and messages (%d logged answers); %d answered attempts; %d turns reached an upstream; %d usage records %v",
		nreqs, nserved, attempts, reached, nrecs, statuses)
	t.Logf("soak: heap %.1f MiB before, %.1f MiB after; goroutines %d before, %d after",
		float64(heapBefore)/(1<<20), float64(heapAfter)/(1<<20), goroutinesBefore, goroutinesAfter)
}

// soakReached counts the turns (by their marker) of which at least one
// upstream attempt was answered: response headers over HTTP, a frame over
// a WebSocket. That is the relay's rule for writing a usage record.
func soakReached(reqs []relaytest.Received, served []relaytest.Served) (turns, attempts int) {
	marker := make(map[int64]string, len(reqs))
	for _, q := range reqs {
		if q.Method != http.MethodGet {
			marker[q.Seq] = soakMarker(q.Body)
		}
	}
	answered := map[string]bool{}
	for _, s := range served {
		m, ok := marker[s.Seq]
		if !ok || m == "" {
			continue
		}
		if s.HTTPStatus != 0 || (s.WebSocket && s.Events > 0) {
			answered[m] = true
			attempts++
		}
	}
	return len(answered), attempts
}

// soakMarker is the marker of the turn a request carries: its input
// string, or, when the relay sent a conversation whole to another account
// (the input an array of the chain's items), the text of the chain's last
// user message, which is this turn's input. Read as the input's raw text,
// such a request would count as a turn of its own.
func soakMarker(body []byte) string {
	in := gjson.GetBytes(body, "input")
	if !in.IsArray() {
		return in.String()
	}
	items := in.Array()
	for i := len(items) - 1; i >= 0; i-- {
		if items[i].Get("role").String() != "user" {
			continue
		}
		c := items[i].Get("content")
		if !c.IsArray() {
			return c.String()
		}
		for _, part := range c.Array() {
			if t := part.Get("text").String(); t != "" {
				return t
			}
		}
	}
	return in.Raw
}

func soakRequest(reqs []relaytest.Received, seq int64) string {
	for _, q := range reqs {
		if q.Seq == seq {
			return q.Method + " " + q.Path + " " + string(q.Body)
		}
	}
	return "?"
}

// soakHTTP runs one POST turn; one in ten clients leaves early.
func soakHTTP(base string, client *http.Client, user int, stream bool, r *rand.Rand, seq *atomic.Int64, st *soakStats) {
	n := seq.Add(1)
	st.turns.Add(1)
	if stream {
		st.sseTurns.Add(1)
	} else {
		st.httpTurns.Add(1)
	}
	leave := r.IntN(10) == 0
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	body := fmt.Sprintf(`{"model":"gpt-test","stream":%v,"input":"soak-%d"}`, stream, n)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/responses", strings.NewReader(body))
	req.Header.Set("Authorization", fmt.Sprintf("Bearer soak-user-%d", user))
	req.Header.Set("Content-Type", "application/json")
	if leave {
		st.left.Add(1)
		if !stream {
			timer := time.AfterFunc(time.Duration(r.IntN(20))*time.Millisecond, cancel)
			defer timer.Stop()
		}
	}
	resp, err := client.Do(req)
	if err != nil {
		if !leave {
			st.fail("turn %d: %v", n, err)
		}
		return
	}
	defer resp.Body.Close()
	if leave && stream {
		br := bufio.NewReader(resp.Body)
		for i := r.IntN(8); i > 0; i-- {
			if _, err := br.ReadString('\n'); err != nil {
				break
			}
		}
		cancel()
		return
	}
	b, err := io.ReadAll(resp.Body)
	if leave {
		return
	}
	if err != nil {
		st.fail("turn %d: reading: %v", n, err)
		return
	}
	soakCheckHTTP(n, resp, b, st)
}

// soakCheckHTTP checks a whole answer: an OpenAI error, a response object,
// or an event stream that ends with exactly one terminal or error event.
func soakCheckHTTP(n int64, resp *http.Response, b []byte, st *soakStats) {
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		evs, err := relaytest.ReadSSE(strings.NewReader(string(b)))
		if err != nil || len(evs) == 0 {
			st.fail("turn %d: stream %v, %d events", n, err, len(evs))
			return
		}
		ends := 0
		for _, ev := range evs {
			switch ev.Type {
			case "response.completed", "response.incomplete", "response.failed", "error":
				ends++
			}
		}
		last := evs[len(evs)-1].Type
		if ends != 1 || (last != "response.completed" && last != "response.incomplete" && last != "response.failed" && last != "error") {
			st.fail("turn %d: stream ends %v", n, last)
		}
		return
	}
	switch {
	case resp.StatusCode == 200:
		if gjson.GetBytes(b, "object").String() != "response" {
			st.fail("turn %d: 200 with %s", n, b)
		}
	default:
		e := gjson.GetBytes(b, "error")
		if !e.Get("message").Exists() || !e.Get("type").Exists() || !e.Get("param").Exists() || !e.Get("code").Exists() {
			st.fail("turn %d: %d with %s", n, resp.StatusCode, b)
		}
	}
}

// soakWS runs up to turns turns on one connection, chaining them; one
// client in ten leaves in the middle of a turn.
func soakWS(base string, user, turns int, r *rand.Rand, seq *atomic.Int64, st *soakStats) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	url := "ws" + strings.TrimPrefix(base, "http") + "/v1/responses"
	ws, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {fmt.Sprintf("Bearer soak-user-%d", user)}}})
	if err != nil {
		st.fail("dial: %v", err)
		return
	}
	defer ws.CloseNow()
	ws.SetReadLimit(64 << 20)
	prev := ""
	for i := 0; i < turns; i++ {
		n := seq.Add(1)
		st.turns.Add(1)
		st.wsTurns.Add(1)
		msg := fmt.Sprintf(`{"type":"response.create","model":"gpt-test","input":"soak-%d"`, n)
		if prev != "" {
			msg += `,"previous_response_id":"` + prev + `"`
		}
		if err := ws.Write(ctx, websocket.MessageText, []byte(msg+"}")); err != nil {
			return // closed by the relay after a refusal (1013)
		}
		leaveAfter := -1
		if r.IntN(10) == 0 {
			leaveAfter = r.IntN(8)
			st.left.Add(1)
		}
		for frames := 0; ; frames++ {
			if frames == leaveAfter {
				return // CloseNow: gone mid-turn
			}
			_, data, err := ws.Read(ctx)
			if err != nil {
				if code := websocket.CloseStatus(err); code != websocket.StatusTryAgainLater {
					st.fail("turn %d: read after %d frames: %v", n, frames, err)
				}
				return
			}
			typ := gjson.GetBytes(data, "type").String()
			if typ == "response.completed" {
				prev = gjson.GetBytes(data, "response.id").String()
			}
			if typ == "response.completed" || typ == "response.incomplete" || typ == "response.failed" || typ == "error" {
				if typ != "response.completed" {
					prev = ""
				}
				break
			}
		}
	}
	ws.Close(websocket.StatusNormalClosure, "")
}
