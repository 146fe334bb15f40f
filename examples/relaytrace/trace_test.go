package relaytrace_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/examples/relaytrace"
	"github.com/relaykit/responsesrelay/relay"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/relaykit/responsesrelay/scheduler"
)

func TestServedTurn(t *testing.T) {
	e := newEnv(t, relaytrace.Options{}, &scheduler.Account{ID: "a", Concurrency: 8})
	code, reqID := e.do(streamReq)
	if code != 200 {
		t.Fatalf("relay answered %d", code)
	}
	usage := e.Up.Served()[0].Usage
	turn, kids := e.oneTurn()

	if turn.SpanKind() != trace.SpanKindServer || turn.Parent().IsValid() {
		t.Errorf("turn span kind %v, parent %v: want a server root span", turn.SpanKind(), turn.Parent())
	}
	if turn.Status().Code != codes.Unset {
		t.Errorf("turn status %v, want unset", turn.Status())
	}
	wantAttrs(t, turn, map[attribute.Key]any{
		relaytrace.AttrRequestID:    reqID,
		relaytrace.AttrTransport:    "http",
		relaytrace.AttrModel:        "gpt-test",
		relaytrace.AttrStatus:       "completed",
		relaytrace.AttrHTTPStatus:   200,
		relaytrace.AttrAttempts:     1,
		relaytrace.AttrAccountID:    "a",
		relaytrace.AttrStream:       true,
		relaytrace.AttrGroupID:      "g",
		relaytrace.AttrInputTokens:  usage.Input,
		relaytrace.AttrOutputTokens: usage.Output,
	})
	for _, k := range []attribute.Key{relaytrace.AttrUserID, relaytrace.AttrAPIKeyID} {
		if _, ok := attrs(turn)[k]; ok {
			t.Errorf("turn span has %s without RecordSubject", k)
		}
	}
	var events []string
	for _, ev := range turn.Events() {
		events = append(events, ev.Name)
	}
	if got := strings.Join(events, ","); got != "slot_wait,slot_wait,first_token" {
		t.Errorf("turn events %s, want the user and account slot waits and first_token", got)
	}
	// first_token is added at the end but timed at the first output.
	if evs := turn.Events(); len(evs) == 3 {
		ft := evs[2]
		if ft.Time.Before(turn.StartTime()) || ft.Time.After(turn.EndTime()) {
			t.Errorf("first_token at %v, want within the turn [%v, %v]", ft.Time, turn.StartTime(), turn.EndTime())
		}
		if ea := attrsOf(ft.Attributes); ea[relaytrace.AttrAccountID].AsString() != "a" || ea[relaytrace.AttrTTFTMS].AsFloat64() < 0 {
			t.Errorf("first_token attributes %v", ft.Attributes)
		}
	}

	if len(kids) != 1 {
		t.Fatalf("%d attempt spans, want 1", len(kids))
	}
	at := kids[0]
	if at.Name() != relaytrace.AttemptSpan || at.SpanKind() != trace.SpanKindClient {
		t.Errorf("attempt span %q kind %v", at.Name(), at.SpanKind())
	}
	wantAttrs(t, at, map[attribute.Key]any{
		relaytrace.AttrAccountID: "a",
		relaytrace.AttrAttempt:   1,
		relaytrace.AttrLayer:     string(scheduler.LayerBalanced),
		relaytrace.AttrOutcome:   string(relay.AttemptServed),
	})
	if at.StartTime().Before(turn.StartTime()) || at.EndTime().After(turn.EndTime()) || !at.EndTime().After(at.StartTime()) {
		t.Errorf("attempt [%v, %v] not within turn [%v, %v]", at.StartTime(), at.EndTime(), turn.StartTime(), turn.EndTime())
	}
}

// A 429 on the preferred account, then the other serves: two children.
func TestFailoverSpans(t *testing.T) {
	e := newEnv(t, relaytrace.Options{},
		&scheduler.Account{ID: "a", Concurrency: 8, Priority: 0},
		&scheduler.Account{ID: "b", Concurrency: 8, Priority: 1})
	e.Up.Script("a", relaytest.Step{Status: http.StatusTooManyRequests})
	if code, _ := e.do(streamReq); code != 200 {
		t.Fatalf("relay answered %d", code)
	}
	turn, kids := e.oneTurn()
	if len(kids) != 2 {
		t.Fatalf("%d attempt spans, want 2", len(kids))
	}
	wantAttrs(t, kids[0], map[attribute.Key]any{
		relaytrace.AttrAccountID:  "a",
		relaytrace.AttrAttempt:    1,
		relaytrace.AttrOutcome:    string(relay.AttemptFailover),
		relaytrace.AttrReason:     string(relay.ReasonStatus),
		relaytrace.AttrHTTPStatus: 429,
	})
	if kids[0].Status().Code != codes.Error {
		t.Errorf("failed-over attempt status %v, want error", kids[0].Status())
	}
	wantAttrs(t, kids[1], map[attribute.Key]any{
		relaytrace.AttrAccountID: "b",
		relaytrace.AttrAttempt:   2,
		relaytrace.AttrOutcome:   string(relay.AttemptServed),
	})
	if kids[1].Status().Code != codes.Unset {
		t.Errorf("served attempt status %v, want unset", kids[1].Status())
	}
	if kids[1].StartTime().Before(kids[0].EndTime()) {
		t.Error("the second attempt starts before the first ended")
	}
	wantAttrs(t, turn, map[attribute.Key]any{
		relaytrace.AttrAttempts:  2,
		relaytrace.AttrAccountID: "b",
		relaytrace.AttrStatus:    "completed",
	})
	if turn.Status().Code != codes.Unset {
		t.Errorf("turn status %v, want unset after a successful failover", turn.Status())
	}
}

// Every account fails: the turn answers 502 and its span is an error.
func TestFailedTurn(t *testing.T) {
	e := newEnv(t, relaytrace.Options{}, &scheduler.Account{ID: "a", Concurrency: 8}, &scheduler.Account{ID: "b", Concurrency: 8})
	e.Up.Script("a", relaytest.Step{Status: 500})
	e.Up.Script("b", relaytest.Step{Status: 500})
	if code, _ := e.do(streamReq); code != http.StatusBadGateway {
		t.Fatalf("relay answered %d, want 502", code)
	}
	turn, kids := e.oneTurn()
	if turn.Status().Code != codes.Error {
		t.Errorf("turn status %v, want error", turn.Status())
	}
	for _, ev := range turn.Events() {
		if ev.Name == relaytrace.FirstTokenEvent {
			t.Error("a turn with no output has a first_token event")
		}
	}
	wantAttrs(t, turn, map[attribute.Key]any{relaytrace.AttrHTTPStatus: 502, relaytrace.AttrAttempts: 2})
	if len(kids) != 2 {
		t.Fatalf("%d attempt spans, want 2", len(kids))
	}
	for _, k := range kids {
		if k.Status().Code != codes.Error {
			t.Errorf("attempt on %s: status %v, want error", attrs(k)[relaytrace.AttrAccountID].AsString(), k.Status())
		}
	}
}

// A request rejected before any upstream: an error span with no children.
func TestRejectedTurn(t *testing.T) {
	e := newEnv(t, relaytrace.Options{}, &scheduler.Account{ID: "a", Concurrency: 8})
	if code, _ := e.doKey(streamReq, "wrong"); code != http.StatusUnauthorized {
		t.Fatalf("relay answered %d, want 401", code)
	}
	turn, kids := e.oneTurn()
	if len(kids) != 0 || turn.Status().Code != codes.Error {
		t.Errorf("%d children, status %v; want none and error", len(kids), turn.Status())
	}
	wantAttrs(t, turn, map[attribute.Key]any{
		relaytrace.AttrStatus:     relay.TurnError,
		relaytrace.AttrHTTPStatus: 401,
		relaytrace.AttrErrorType:  "authentication_error",
		relaytrace.AttrAttempts:   0,
	})
	if _, ok := attrs(turn)[relaytrace.AttrGroupID]; ok {
		t.Error("an unauthenticated turn names a group")
	}
}

// The turn span ends when the client leaves mid-stream, without an error.
func TestClientGoneSpan(t *testing.T) {
	e := newEnv(t, relaytrace.Options{}, &scheduler.Account{ID: "a", Concurrency: 8})
	e.H.DrainTimeout = 250 * time.Millisecond
	e.LeaveMidStream("a", streamReq, func() {
		if n := len(e.spans.Ended()); n != 0 {
			t.Fatalf("%d spans ended while the turn streams", n)
		}
	})

	turn, kids := e.oneTurn()
	wantAttrs(t, turn, map[attribute.Key]any{relaytrace.AttrStatus: "client_gone"})
	if turn.Status().Code == codes.Error {
		t.Errorf("turn status %v: a client leaving is not an error", turn.Status())
	}
	if len(kids) != 1 {
		t.Fatalf("%d attempt spans, want 1", len(kids))
	}
	wantAttrs(t, kids[0], map[attribute.Key]any{relaytrace.AttrOutcome: string(relay.AttemptClientGone)})
}

func TestRecordSubject(t *testing.T) {
	e := newEnv(t, relaytrace.Options{RecordSubject: true}, &scheduler.Account{ID: "a", Concurrency: 8})
	e.do(streamReq)
	turn, _ := e.oneTurn()
	wantAttrs(t, turn, map[attribute.Key]any{relaytrace.AttrUserID: "u1", relaytrace.AttrAPIKeyID: "k1"})
}

// Under a span the host started for the request, the turn is its child,
// of kind internal.
func TestUnderHostSpan(t *testing.T) {
	e := newEnv(t, relaytrace.Options{}, &scheduler.Account{ID: "a", Concurrency: 8})
	host := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(e.spans))
	defer host.Shutdown(context.Background())
	e.Wrap = func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctx, span := host.Tracer("host").Start(r.Context(), "POST /v1/responses", trace.WithSpanKind(trace.SpanKindServer))
			defer span.End()
			next.ServeHTTP(w, r.WithContext(ctx))
		})
	}
	e.do(streamReq)
	turn, _ := e.oneTurn()
	var hostSpan sdktrace.ReadOnlySpan
	for _, s := range e.spans.Ended() {
		if s.Name() == "POST /v1/responses" {
			hostSpan = s
		}
	}
	if hostSpan == nil {
		t.Fatal("the host's span did not end")
	}
	if turn.Parent().SpanID() != hostSpan.SpanContext().SpanID() || turn.SpanKind() != trace.SpanKindInternal {
		t.Errorf("turn span: parent %v kind %v; want the host span %v, internal", turn.Parent().SpanID(), turn.SpanKind(), hostSpan.SpanContext().SpanID())
	}
}

// Calls whose context carries no turn of this observer touch no span: in
// particular, never end a span of the host's.
func TestForeignContext(t *testing.T) {
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
	defer tp.Shutdown(context.Background())
	ctx, host := tp.Tracer("host").Start(context.Background(), "host")
	o := relaytrace.New(tp, relaytrace.Options{})
	o.SlotWait(ctx, relay.SlotWait{Kind: relay.SlotAccount, Outcome: relay.WaitAcquired})
	o.Attempt(ctx, relay.Attempt{N: 1})
	o.TurnEnd(ctx, relay.TurnEnd{Usage: billing.Usage{Status: relay.TurnError, FirstTokenMS: 5}, Code: 500})
	if !host.IsRecording() || len(sr.Ended()) != 0 {
		t.Errorf("host span recording %v, %d spans ended; want it untouched", host.IsRecording(), len(sr.Ended()))
	}
	host.End()
}
