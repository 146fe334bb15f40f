package relaytrace_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/goleak"

	"github.com/relaykit/responsesrelay/examples/relaytrace"
	"github.com/relaykit/responsesrelay/relay"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/relaykit/responsesrelay/scheduler"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// env is a traced relay in front of the fake upstream.
type env struct {
	t     *testing.T
	up    *relaytest.Server
	h     *relay.Handler
	srv   *httptest.Server
	spans *tracetest.SpanRecorder
	// wrap, when set before the first request, wraps the relay as a host's
	// middleware would.
	wrap func(http.Handler) http.Handler
}

func newEnv(t *testing.T, o relaytrace.Options, accounts ...*scheduler.Account) *env {
	t.Helper()
	e := &env{t: t, up: relaytest.NewServer(), spans: tracetest.NewSpanRecorder()}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(e.spans))
	pool := scheduler.NewStaticPool()
	keys := scheduler.StaticKeys{}
	for _, a := range accounts {
		a.BaseURL = e.up.BaseURL(a.ID)
		pool.Add("g", a)
		keys[a.ID] = "sk-test-" + a.ID
	}
	e.h = &relay.Handler{
		Scheduler:   &scheduler.Scheduler{Pool: pool},
		Credentials: keys,
		Observer:    relaytrace.New(tp, o),
		Logger:      slog.New(slog.DiscardHandler),
		Authenticate: func(r *http.Request) (*relay.Subject, error) {
			if r.Header.Get("Authorization") != "Bearer rk-client" {
				return nil, nil
			}
			return &relay.Subject{UserID: "u1", APIKeyID: "k1", GroupID: "g", Concurrency: 4}, nil
		},
	}
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var h http.Handler = e.h
		if e.wrap != nil {
			h = e.wrap(h)
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		e.srv.CloseClientConnections()
		e.srv.Close()
		e.up.Close()
		e.h.CloseIdleConnections()
		e.wait()
		tp.Shutdown(context.Background())
	})
	return e
}

// wait waits until every turn has ended, and with it its span.
func (e *env) wait() {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.h.Wait(ctx); err != nil {
		e.t.Fatalf("turns still active: %d", e.h.Active())
	}
}

func (e *env) request(ctx context.Context, body, key string) *http.Request {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.srv.URL+"/v1/responses", strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	return req
}

// do sends body with the client key and returns the status and the relay's
// request id once the turn is over.
func (e *env) do(body string) (status int, requestID string) {
	return e.doKey(body, "rk-client")
}

func (e *env) doKey(body, key string) (int, string) {
	e.t.Helper()
	resp, err := e.srv.Client().Do(e.request(context.Background(), body, key))
	if err != nil {
		e.t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	e.wait()
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
	e.t.Helper()
	turns, children := e.turns()
	if len(turns) != 1 {
		e.t.Fatalf("%d turn spans, want 1 (ended: %d spans)", len(turns), len(e.spans.Ended()))
	}
	return turns[0], children[turns[0]]
}

func attrs(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
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
