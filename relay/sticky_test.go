package relay_test

import (
	"bufio"
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/relay"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/relaykit/responsesrelay/scheduler"
	"github.com/tidwall/gjson"
)

// TestPreviousResponseSticks: a chain of previous_response_id turns stays
// on the account that holds the responses, among many equal accounts.
func TestPreviousResponseSticks(t *testing.T) {
	e := newEnv(t, "a", "b", "c", "d", "e", "f")
	r := e.do(textReq)
	if r.status != 200 {
		t.Fatalf("status %d", r.status)
	}
	prev := gjson.GetBytes(r.body, "id").String()
	for i := 0; i < 8; i++ {
		r = e.do(`{"model":"gpt-test","stream":true,"input":"more","previous_response_id":"` + prev + `"}`)
		if r.lastType() != "response.completed" {
			t.Fatalf("turn %d: %s", i, r.body)
		}
		prev = gjson.GetBytes(r.events[len(r.events)-1].Data, "response.id").String()
	}
	reqs := e.up.Requests()
	for _, q := range reqs[1:] {
		if q.Account != reqs[0].Account {
			t.Fatalf("chain moved accounts: %v", accountsOf(reqs))
		}
	}
	// The cached tokens reported for chained turns reach the records.
	recs := e.sink.all()
	if recs[len(recs)-1].CachedInputTokens == 0 {
		t.Fatalf("chained turn recorded no cached tokens: %+v", recs[len(recs)-1])
	}
}

// TestSessionSticks: turns with the same session_id header stay together;
// the binding is per API key.
func TestSessionSticks(t *testing.T) {
	e := newEnv(t, "a", "b", "c", "d", "e", "f")
	for i := 0; i < 8; i++ {
		if r := e.do(textReq, "session_id", "s-1"); r.status != 200 {
			t.Fatalf("status %d", r.status)
		}
	}
	reqs := e.up.Requests()
	for _, q := range reqs {
		if q.Account != reqs[0].Account {
			t.Fatalf("session moved accounts: %v", accountsOf(reqs))
		}
	}
}

// TestAccountSlotWait: with every account full, a streaming turn waits for
// an account slot with pings and is then served.
func TestAccountSlotWait(t *testing.T) {
	e := newEnv(t)
	e.addAccount(&scheduler.Account{ID: "a", Concurrency: 1})
	e.h.KeepAlive = 5 * time.Millisecond
	release, first := e.holdOne()
	resp := e.post(streamReq)
	defer resp.Body.Close()
	buf := make([]byte, 8)
	if _, err := resp.Body.Read(buf); err != nil || string(buf) != ": ping\n\n" {
		t.Fatalf("read %q %v", buf, err)
	}
	release()
	evs, err := relaytest.ReadSSE(resp.Body)
	if err != nil || len(evs) == 0 || evs[len(evs)-1].Type != "response.completed" {
		t.Fatalf("%d events, %v", len(evs), err)
	}
	<-first
	if m := e.up.MaxInFlight("a"); m != 1 {
		t.Fatalf("account concurrency exceeded: %d", m)
	}
}

// TestHookFailures: host hooks that panic or fail never crash the relay or
// keep a slot.
func TestHookFailures(t *testing.T) {
	t.Run("authenticate panics", func(t *testing.T) {
		e := newEnv(t, "a")
		e.h.Authenticate = func(*http.Request) (*relay.Subject, error) { panic("boom") }
		if r := e.do(textReq); r.status != 401 {
			t.Fatalf("status %d", r.status)
		}
	})
	t.Run("credentials fail over", func(t *testing.T) {
		e := newEnv(t)
		e.addAccount(&scheduler.Account{ID: "nokey", Priority: 0})
		e.addAccount(&scheduler.Account{ID: "good", Priority: 1})
		delete(e.keys, "nokey")
		r := e.do(textReq)
		if r.status != 200 || len(e.up.Requests()) != 1 {
			t.Fatalf("status %d, %d upstream requests", r.status, len(e.up.Requests()))
		}
	})
	t.Run("usage sink fails", func(t *testing.T) {
		e := newEnv(t, "a")
		e.h.Usage = billing.SinkFunc(func(context.Context, billing.Usage) error { return errors.New("disk full") })
		if r := e.do(textReq); r.status != 200 {
			t.Fatalf("status %d", r.status)
		}
		if logs := e.logs.String(); !strings.Contains(logs, "disk full") || !strings.Contains(logs, "input_tokens") {
			t.Fatalf("the lost record is not in the log:\n%s", logs)
		}
	})
	t.Run("usage sink panics", func(t *testing.T) {
		e := newEnv(t, "a")
		e.h.Usage = billing.SinkFunc(func(context.Context, billing.Usage) error { panic("sink bug") })
		if r := e.do(streamReq); r.lastType() != "response.completed" {
			t.Fatalf("events %v", r.types())
		}
	})
	t.Run("pool fails", func(t *testing.T) {
		e := newEnv(t, "a")
		e.sched.Pool = failingPool{}
		if r := e.do(textReq); r.status != 503 {
			t.Fatalf("status %d", r.status)
		}
	})
}

type failingPool struct{}

func (failingPool) Accounts(context.Context, string) ([]*scheduler.Account, error) {
	return nil, errors.New("db down")
}

// orderStore is a map Store that notes a binding written after the
// client already read the turn's terminal event.
type orderStore struct {
	mu   sync.Mutex
	m    map[string]string
	seen *atomic.Bool
	late atomic.Int32
}

func (s *orderStore) Get(_ context.Context, key string) (string, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[key]
	return v, ok, nil
}

func (s *orderStore) Set(_ context.Context, key, value string, _ time.Duration) error {
	if s.seen.Load() {
		s.late.Add(1)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[key] = value
	return nil
}

func (s *orderStore) Delete(_ context.Context, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, key)
	return nil
}

// TestBoundBeforeTerminal: the response's binding is written before the
// client reads the terminal event, so a next turn sent the moment the
// stream ends finds its account and its owner.
func TestBoundBeforeTerminal(t *testing.T) {
	e := newEnv(t, "a")
	var seen atomic.Bool
	st := &orderStore{m: map[string]string{}, seen: &seen}
	e.sched.Store = st
	for range 20 {
		seen.Store(false)
		resp := e.post(streamReq)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if strings.Contains(sc.Text(), `"type":"response.completed"`) {
				seen.Store(true)
			}
		}
		resp.Body.Close()
		if !seen.Load() {
			t.Fatal("no terminal event")
		}
	}
	if n := st.late.Load(); n != 0 {
		t.Fatalf("%d of 20 bindings were written after the client read the terminal event", n)
	}
}

// gateStore is a map Store whose Set signals each write on set and then
// waits for release (nil: does not wait) or its context.
type gateStore struct {
	mapStore
	set     chan string
	release chan struct{}
}

func (s *gateStore) Set(ctx context.Context, key, value string, ttl time.Duration) error {
	select {
	case s.set <- key:
	default:
	}
	if s.release != nil {
		select {
		case <-s.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return s.mapStore.Set(ctx, key, value, ttl)
}

// TestBoundWhileStreaming: with a shared Store, a stream's binding is
// written once its output starts, while the upstream is still paused
// mid-stream, so its round trip is off the client's path to the end. A
// stream that fails after its output is bound too, to the account that
// served it.
func TestBoundWhileStreaming(t *testing.T) {
	for _, end := range []string{"", "failed"} {
		t.Run("end "+end, func(t *testing.T) {
			e := newEnv(t, "a")
			st := &gateStore{mapStore: mapStore{m: map[string]string{}}, set: make(chan string, 8)}
			e.sched.Store = st
			hold := make(chan struct{})
			e.up.Script("a", relaytest.Step{After: 4, Hold: hold, End: end})
			got := make(chan result, 1)
			go func() { got <- e.do(streamReq) }()
			select {
			case key := <-st.set:
				if !strings.HasPrefix(key, "resp:resp_") {
					t.Fatalf("first write %q, want the response's binding", key)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("nothing was bound while the stream was paused after its output began")
			}
			close(hold)
			r := <-got
			want := "response.completed"
			if end == "failed" {
				want = "response.failed"
			}
			if r.lastType() != want {
				t.Fatalf("events %v", r.types())
			}
			id := gjson.GetBytes(r.events[len(r.events)-1].Data, "response.id").String()
			if v, ok, _ := st.Get(context.Background(), "resp:"+id); !ok || !strings.Contains(v, "a") {
				t.Fatalf("binding of %s: %q", id, v)
			}
		})
	}
}

// TestBindHangs: a Store whose Set never returns holds a stream's
// terminal event for at most HookTimeout: the stream ends, the failure is
// logged, and the write's goroutine ends with its context (the leak check
// at cleanup).
func TestBindHangs(t *testing.T) {
	e := newEnv(t, "a")
	st := &gateStore{mapStore: mapStore{m: map[string]string{}}, set: make(chan string, 8), release: make(chan struct{})}
	e.sched.Store = st
	e.h.HookTimeout = 50 * time.Millisecond
	r := e.do(streamReq)
	if r.lastType() != "response.completed" {
		t.Fatalf("events %v", r.types())
	}
	if logs := e.logs.String(); !strings.Contains(logs, "sticky binding failed") {
		t.Fatalf("the failed binding is not in the log:\n%s", logs)
	}
}

// TestBoundWhenUpstreamBreaks: an upstream reset after the stream's output
// began ends it with response.failed; the binding written from its first
// output is awaited before the turn ends (no goroutine left: the leak check
// at cleanup), and the next turn continues on the same account.
func TestBoundWhenUpstreamBreaks(t *testing.T) {
	e := newEnv(t, "a", "b", "c")
	st := &gateStore{mapStore: mapStore{m: map[string]string{}}, set: make(chan string, 8)}
	e.sched.Store = st
	for _, a := range []string{"a", "b", "c"} {
		e.up.Script(a, relaytest.Step{After: 4, Cut: true})
	}
	r := e.do(streamReq)
	if r.lastType() != "response.failed" {
		t.Fatalf("events %v", r.types())
	}
	id := gjson.GetBytes(r.events[0].Data, "response.id").String()
	made := e.up.Requests()[0].Account
	if v, ok, _ := st.Get(context.Background(), "resp:"+id); !ok || !strings.Contains(v, made) {
		t.Fatalf("binding of %s: %q, want %s", id, v, made)
	}
	r = e.do(`{"model":"gpt-test","stream":true,"input":"again","previous_response_id":"` + id + `"}`)
	if reqs := e.up.Requests(); r.lastType() != "response.completed" || reqs[len(reqs)-1].Account != made {
		t.Fatalf("continued: %v on %s, want %s", r.types(), reqs[len(reqs)-1].Account, made)
	}
}
