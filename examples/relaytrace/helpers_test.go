package relaytrace_test

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/goleak"

	"github.com/relaykit/responsesrelay/examples/internal/relayenv"
	"github.com/relaykit/responsesrelay/examples/relaytrace"
	"github.com/relaykit/responsesrelay/relay"
	"github.com/relaykit/responsesrelay/scheduler"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// env is a traced relay in front of the fake upstream.
type env struct {
	*relayenv.Env
	spans *tracetest.SpanRecorder
}

func newEnv(t *testing.T, o relaytrace.Options, accounts ...*scheduler.Account) *env {
	t.Helper()
	e := &env{spans: tracetest.NewSpanRecorder()}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(e.spans))
	t.Cleanup(func() { tp.Shutdown(context.Background()) }) // after the env's own cleanup
	e.Env = relayenv.New(t, func(h *relay.Handler) { h.Observer = relaytrace.New(tp, o) }, accounts...)
	return e
}

// do sends body with the client key and returns the status and the relay's
// request id once the turn is over.
func (e *env) do(body string) (status int, requestID string) {
	return e.doKey(body, relayenv.ClientKey)
}

func (e *env) doKey(body, key string) (int, string) {
	e.T.Helper()
	resp, _ := e.Do(body, key)
	return resp.StatusCode, resp.Header.Get("X-Relay-Request-Id")
}

// turns returns the ended turn spans and, for each, its ended children in
// the order they ended.
func (e *env) turns() (turns []sdktrace.ReadOnlySpan, children map[sdktrace.ReadOnlySpan][]sdktrace.ReadOnlySpan) {
	ended := e.spans.Ended()
	children = map[sdktrace.ReadOnlySpan][]sdktrace.ReadOnlySpan{}
	for _, s := range ended {
		if s.Name() == relaytrace.TurnSpan {
			turns = append(turns, s)
		}
	}
	for _, s := range ended {
		for _, t := range turns {
			if s.Parent().SpanID() == t.SpanContext().SpanID() && s.Parent().TraceID() == t.SpanContext().TraceID() {
				children[t] = append(children[t], s)
			}
		}
	}
	return turns, children
}

// oneTurn returns the only turn span and its children.
func (e *env) oneTurn() (sdktrace.ReadOnlySpan, []sdktrace.ReadOnlySpan) {
	e.T.Helper()
	turns, children := e.turns()
	if len(turns) != 1 {
		e.T.Fatalf("%d turn spans, want 1 (ended: %d spans)", len(turns), len(e.spans.Ended()))
	}
	return turns[0], children[turns[0]]
}

func attrs(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value { return attrsOf(s.Attributes()) }

func attrsOf(kvs []attribute.KeyValue) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range kvs {
		m[kv.Key] = kv.Value
	}
	return m
}

// wantAttrs checks attributes of s; want values are string, int, int64 or bool.
func wantAttrs(t *testing.T, s sdktrace.ReadOnlySpan, want map[attribute.Key]any) {
	t.Helper()
	got := attrs(s)
	for k, w := range want {
		v, ok := got[k]
		if !ok {
			t.Errorf("%s: no attribute %s (want %v)", s.Name(), k, w)
			continue
		}
		var match bool
		switch w := w.(type) {
		case string:
			match = v.Type() == attribute.STRING && v.AsString() == w
		case int:
			match = v.Type() == attribute.INT64 && v.AsInt64() == int64(w)
		case int64:
			match = v.Type() == attribute.INT64 && v.AsInt64() == w
		case bool:
			match = v.Type() == attribute.BOOL && v.AsBool() == w
		}
		if !match {
			t.Errorf("%s: %s = %s, want %v", s.Name(), k, v.Emit(), w)
		}
	}
}

const streamReq = `{"model":"gpt-test","stream":true,"input":"hello there"}`
