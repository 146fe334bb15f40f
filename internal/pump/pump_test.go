package pump

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/internal/leakcheck"
	"github.com/tidwall/gjson"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// sliceSource yields events from memory, then err (io.EOF when nil).
type sliceSource struct {
	events [][]byte
	i      int
	err    error
}

func (s *sliceSource) Next() ([]byte, error) {
	if s.i < len(s.events) {
		s.i++
		return s.events[s.i-1], nil
	}
	if s.err != nil {
		return nil, s.err
	}
	return nil, io.EOF
}

type recSink struct {
	mu    sync.Mutex
	types []string
	datas []string
	fail  bool
}

func (s *recSink) Send(typ string, data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail {
		return errors.New("gone")
	}
	s.types = append(s.types, typ)
	s.datas = append(s.datas, string(data))
	return nil
}

func (s *recSink) Ping() error { return nil }

func ev(typ string, seq int, extra string) []byte {
	return []byte(fmt.Sprintf(`{"type":%q,"sequence_number":%d%s}`, typ, seq, extra))
}

func created() [][]byte {
	return [][]byte{
		ev("response.created", 0, `,"response":{"id":"resp_1","model":"up-model","usage":null}`),
		ev("response.in_progress", 1, `,"response":{"id":"resp_1","model":"up-model"}`),
	}
}

func TestRefusalHoldsBootstrap(t *testing.T) {
	for _, last := range [][]byte{
		ev("response.failed", 2, `,"response":{"id":"resp_1","status":"failed","error":{"code":"server_is_overloaded"}}`),
		ev("error", 2, `,"error":{"code":"rate_limit_exceeded"}`),
	} {
		sink := &recSink{}
		res := Run(context.Background(), &sliceSource{events: append(created(), last)}, sink, Options{HoldBootstrap: true})
		if res.End != EndRefused || res.Started || len(sink.types) != 0 || res.Refusal == nil {
			t.Fatalf("end %v started %v sent %v", res.End, res.Started, sink.types)
		}
	}
}

func TestOutputFlushesHeldAndRewritesModel(t *testing.T) {
	events := append(created(),
		ev("response.output_text.delta", 2, `,"delta":"hi"`),
		ev("response.completed", 3, `,"response":{"id":"resp_1","status":"completed","model":"up-model","usage":{"input_tokens":3,"output_tokens":2,"total_tokens":5,"input_tokens_details":{"cached_tokens":1},"output_tokens_details":{"reasoning_tokens":1}}}`))
	sink := &recSink{}
	res := Run(context.Background(), &sliceSource{events: events}, sink, Options{HoldBootstrap: true, RequestedModel: "req-model", UpstreamModel: "up-model"})
	if res.End != EndTerminal || res.Forwarded != 4 || res.TerminalType != "response.completed" || res.ResponseID != "resp_1" {
		t.Fatalf("result %+v", res)
	}
	if strings.Join(sink.types, ",") != "response.created,response.in_progress,response.output_text.delta,response.completed" {
		t.Fatalf("sent %v", sink.types)
	}
	for _, i := range []int{0, 1, 3} {
		if m := gjson.Get(sink.datas[i], "response.model").String(); m != "req-model" {
			t.Fatalf("event %d model %q", i, m)
		}
	}
	u := res.Response.Usage
	if u.Input != 3 || u.Output != 2 || u.Total != 5 || u.CachedInput != 1 || u.Reasoning != 1 {
		t.Fatalf("usage %+v", u)
	}
}

func TestBrokenAfterOutputAppendsOneFailed(t *testing.T) {
	events := append(created(), ev("response.output_text.delta", 2, `,"delta":"hi"`), ev("error", 3, `,"code":"x"`))
	sink := &recSink{}
	res := Run(context.Background(), &sliceSource{events: events, err: errors.New("reset")}, sink, Options{HoldBootstrap: true, RequestedModel: "m"})
	if res.End != EndBroken || len(sink.types) != 5 || sink.types[4] != "response.failed" {
		t.Fatalf("end %v sent %v", res.End, sink.types)
	}
	last := sink.datas[4]
	if gjson.Get(last, "sequence_number").Int() != 4 || gjson.Get(last, "response.id").String() != "resp_1" || gjson.Get(last, "response.error.code").String() != "upstream_error" {
		t.Fatalf("failed event %s", last)
	}
}

func TestClientGoneKeepsReading(t *testing.T) {
	events := append(created(), ev("response.output_text.delta", 2, ``),
		ev("response.completed", 3, `,"response":{"id":"resp_1","usage":{"input_tokens":7,"output_tokens":1}}`))
	sink := &recSink{fail: true}
	res := Run(context.Background(), &sliceSource{events: events}, sink, Options{HoldBootstrap: true, DrainTimeout: 1 << 40, Abort: func() {}})
	if res.End != EndClientGone || res.Response.Usage.Input != 7 || res.Response.Usage.Total != 8 {
		t.Fatalf("result %+v", res)
	}
}

// loopSource replays the same events n times, like an SSE reader whose
// buffer is reused.
type loopSource struct {
	events [][]byte
	i      int
}

func (s *loopSource) Next() ([]byte, error) {
	if s.i >= len(s.events) {
		return nil, io.EOF
	}
	s.i++
	return s.events[s.i-1], nil
}

type discardSink struct{}

func (discardSink) Send(string, []byte) error { return nil }
func (discardSink) Ping() error               { return nil }

// BenchmarkPump200 forwards a 200-event stream; allocs/op / 200 is the
// per-event cost of classification and forwarding.
func BenchmarkPump200(b *testing.B) {
	events := created()
	for i := 0; i < 197; i++ {
		events = append(events, ev("response.output_text.delta", i+2, `,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"token","logprobs":[],"obfuscation":"abcdef"`))
	}
	events = append(events, ev("response.completed", 199, `,"response":{"id":"resp_1","status":"completed","usage":{"input_tokens":3,"output_tokens":2,"total_tokens":5}}`))
	b.ReportAllocs()
	src := &loopSource{events: events}
	for b.Loop() {
		src.i = 0
		Run(context.Background(), src, discardSink{}, Options{HoldBootstrap: true, KeepAlive: 1 << 40, IdleTimeout: 1 << 40, Abort: func() {}})
	}
}

// TestMalformedEvent: an event that is not a JSON object with a type, or
// is nested too deep, is never forwarded: a refusal before output, a broken stream after.
func TestMalformedEvent(t *testing.T) {
	// A well-formed event nested deeper than jsonx.MaxDepth is malformed too.
	deep := `{"type":"response.output_text.delta","delta":` + strings.Repeat("[", 1000) + strings.Repeat("]", 1000) + `}`
	for _, bad := range []string{`{"type":"x"`, `not json`, `{"no":"type"}`, `"str"`, deep} {
		sink := &recSink{}
		res := Run(context.Background(), &sliceSource{events: append(created(), []byte(bad))}, sink, Options{HoldBootstrap: true})
		if res.End != EndRefused || !errors.Is(res.Err, ErrMalformedEvent) || len(sink.types) != 0 {
			t.Fatalf("%s before output: end %v err %v sent %v", bad, res.End, res.Err, sink.types)
		}
		sink = &recSink{}
		evs := append(created(), ev("response.output_text.delta", 2, `,"delta":"a"`), []byte(bad))
		res = Run(context.Background(), &sliceSource{events: evs}, sink, Options{HoldBootstrap: true, RequestedModel: "m"})
		if res.End != EndBroken || !errors.Is(res.Err, ErrMalformedEvent) || sink.types[len(sink.types)-1] != "response.failed" {
			t.Fatalf("%s after output: end %v err %v sent %v", bad, res.End, res.Err, sink.types)
		}
		for _, d := range sink.datas {
			if strings.Contains(d, bad) {
				t.Fatalf("malformed event forwarded: %s", d)
			}
		}
	}
}

// TestBlankEventSkipped: an empty data line is a keepalive, not an event.
func TestBlankEventSkipped(t *testing.T) {
	sink := &recSink{}
	evs := append(created(), []byte(""), []byte(" \r\n"), ev("response.completed", 2, `,"response":{"id":"resp_1","status":"completed"}`))
	res := Run(context.Background(), &sliceSource{events: evs}, sink, Options{HoldBootstrap: true})
	if res.End != EndTerminal || strings.Join(sink.types, ",") != "response.created,response.in_progress,response.completed" {
		t.Fatalf("end %v sent %v", res.End, sink.types)
	}
}

// TestSanitizeForwardedErrors: error and failed events pass through
// Sanitize; other events do not.
func TestSanitizeForwardedErrors(t *testing.T) {
	sink := &recSink{}
	evs := append(created(), ev("response.output_text.delta", 2, `,"delta":"SECRET"`),
		ev("error", 3, `,"error":{"message":"SECRET"}`),
		ev("response.failed", 4, `,"response":{"id":"resp_1","status":"failed","error":{"message":"SECRET"}}`))
	Run(context.Background(), &sliceSource{events: evs}, sink, Options{HoldBootstrap: true,
		Sanitize: func(b []byte) []byte { return []byte(strings.ReplaceAll(string(b), "SECRET", "[x]")) }})
	if len(sink.datas) != 5 || !strings.Contains(sink.datas[2], "SECRET") || strings.Contains(sink.datas[3]+sink.datas[4], "SECRET") {
		t.Fatalf("sent %v", sink.datas)
	}
}

// hangupSink is a client that hangs up right after it got the terminal
// event; Send returns once the pump has seen it leave (its Abort ran).
type hangupSink struct {
	recSink
	cancel  context.CancelFunc
	aborted chan struct{}
}

func (s *hangupSink) Send(typ string, data []byte) error {
	err := s.recSink.Send(typ, data)
	if typ == "response.completed" {
		s.cancel()
		select {
		case <-s.aborted:
		case <-time.After(5 * time.Second):
		}
	}
	return err
}

// TestTerminalDeliveredThenGone: a client that leaves after the terminal
// event was written got a normal end, not client_gone.
func TestTerminalDeliveredThenGone(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sink := &hangupSink{cancel: cancel, aborted: make(chan struct{})}
	var once sync.Once
	evs := append(created(), ev("response.completed", 2, `,"response":{"id":"resp_1","status":"completed"}`))
	res := Run(ctx, &sliceSource{events: evs}, sink, Options{HoldBootstrap: true, Abort: func() { once.Do(func() { close(sink.aborted) }) }})
	if res.End != EndTerminal {
		t.Fatalf("end %v", res.End)
	}
}
