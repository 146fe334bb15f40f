package relaytrace

import (
	"context"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/relay"
)

// ScopeName is the instrumentation scope of the tracer.
const ScopeName = "github.com/relaykit/responsesrelay/examples/relaytrace"

// Span names.
const (
	TurnSpan    = "responses.turn"
	AttemptSpan = "responses.attempt"
)

// Event names on the turn span.
const (
	FirstTokenEvent = "first_token"
	SlotWaitEvent   = "slot_wait"
)

// Options configures the tracing. The zero value is ready to use.
type Options struct {
	// RecordSubject adds the subject's user id and API key id to the turn
	// span (relay.user_id, relay.api_key_id). Off by default: traces often
	// go to a third party and live longer than the relay's own logs. The
	// group id is always recorded.
	RecordSubject bool
}

// New returns a relay.Observer that traces each turn as a span named
// TurnSpan, with one child span named AttemptSpan per upstream attempt.
// tp nil means otel.GetTracerProvider(). Set it as relay.Handler.Observer.
func New(tp trace.TracerProvider, o Options) *relay.Observer {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	t := &tracer{tr: tp.Tracer(ScopeName), opts: o}
	return &relay.Observer{
		TurnStart: t.turnStart,
		SlotWait:  t.slotWait,
		Attempt:   t.attempt,
		TurnEnd:   t.turnEnd,
	}
}

type tracer struct {
	tr   trace.Tracer
	opts Options
}

// turnState is what the turn's context carries for the later calls. Its
// own key (rather than trace.SpanFromContext alone) makes sure that only
// a span started here is ever ended here, never a host's. The calls of one
// turn come one at a time, on its goroutine: the fields need no lock.
type turnState struct {
	span  trace.Span
	start time.Time
	// selected is when the last account selection acquired an account:
	// the start of the attempt on it (relay.Attempt carries no start).
	selected time.Time
}

type stateKey struct{}

func stateFrom(ctx context.Context) *turnState {
	st, _ := ctx.Value(stateKey{}).(*turnState)
	return st
}

func (t *tracer) turnStart(ctx context.Context, e relay.TurnStart) context.Context {
	// A server span, unless the host already started one for the request
	// (otelhttp, say): then the turn is an internal span under it.
	kind := trace.SpanKindServer
	if p := trace.SpanContextFromContext(ctx); p.IsValid() && !p.IsRemote() {
		kind = trace.SpanKindInternal
	}
	attrs := []attribute.KeyValue{
		AttrRequestID.String(e.RequestID),
		AttrTransport.String(e.Transport),
		AttrTurn.Int(e.Number),
	}
	// The model and subject are set at TurnEnd, when the relay knows them.
	// The call is made as the turn arrives: now is its start.
	start := time.Now()
	ctx, span := t.tr.Start(ctx, TurnSpan, trace.WithSpanKind(kind), trace.WithTimestamp(start), trace.WithAttributes(attrs...))
	return context.WithValue(ctx, stateKey{}, &turnState{span: span, start: start})
}

func (t *tracer) subjectAttrs(attrs []attribute.KeyValue, s *relay.Subject) []attribute.KeyValue {
	if s == nil {
		return attrs
	}
	if s.GroupID != "" {
		attrs = append(attrs, AttrGroupID.String(s.GroupID))
	}
	if t.opts.RecordSubject {
		attrs = append(attrs, AttrUserID.String(s.UserID), AttrAPIKeyID.String(s.APIKeyID))
	}
	return attrs
}

func (t *tracer) slotWait(ctx context.Context, e relay.SlotWait) {
	st := stateFrom(ctx)
	if st == nil {
		return
	}
	now := time.Now()
	if e.Kind == relay.SlotAccount && e.Outcome == relay.WaitAcquired {
		st.selected = now
	}
	st.span.AddEvent(SlotWaitEvent, trace.WithTimestamp(now), trace.WithAttributes(
		AttrSlotKind.String(string(e.Kind)),
		AttrSlotOutcome.String(string(e.Outcome)),
		AttrSlotWaitMS.Float64(ms(e.Wait)),
	))
}

func (t *tracer) attempt(ctx context.Context, e relay.Attempt) {
	st := stateFrom(ctx)
	if st == nil {
		return
	}
	if trace.SpanFromContext(ctx) != st.span {
		ctx = trace.ContextWithSpan(ctx, st.span)
	}
	attrs := []attribute.KeyValue{
		AttrAccountID.String(e.AccountID),
		AttrAttempt.Int(e.N),
		AttrLayer.String(string(e.Layer)),
		AttrOutcome.String(string(e.Outcome)),
	}
	if e.Status != 0 {
		attrs = append(attrs, AttrHTTPStatus.Int(e.Status))
	}
	if e.Reason != "" {
		attrs = append(attrs, AttrReason.String(string(e.Reason)))
	}
	// The attempt began as its account was selected. An attempt the turn
	// moved on from is reported after the next selection, so "now minus
	// Duration" would place it late; it is the fallback only.
	start := st.selected
	if start.IsZero() {
		start = time.Now().Add(-e.Duration)
	}
	_, span := t.tr.Start(ctx, AttemptSpan, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithTimestamp(start), trace.WithAttributes(attrs...))
	switch e.Outcome {
	case relay.AttemptFailover, relay.AttemptFailed, relay.AttemptBroken:
		span.SetStatus(codes.Error, string(e.Reason))
	}
	span.End(trace.WithTimestamp(start.Add(e.Duration)))
}

func (t *tracer) turnEnd(ctx context.Context, e relay.TurnEnd) {
	st := stateFrom(ctx)
	if st == nil {
		return
	}
	u := &e.Usage
	if u.FirstTokenMS >= 0 {
		// Known only now, but timed when it happened.
		ttft := time.Duration(u.FirstTokenMS) * time.Millisecond
		st.span.AddEvent(FirstTokenEvent, trace.WithTimestamp(st.start.Add(ttft)),
			trace.WithAttributes(AttrTTFTMS.Float64(ms(ttft)), AttrAccountID.String(u.AccountID)))
	}
	attrs := make([]attribute.KeyValue, 0, 16)
	attrs = append(attrs,
		AttrStatus.String(u.Status),
		AttrHTTPStatus.Int(e.Code),
		AttrAttempts.Int(u.Attempts),
		AttrStream.Bool(u.Stream),
	)
	if u.Model != "" {
		attrs = append(attrs, AttrModel.String(u.Model))
	}
	if u.AccountID != "" {
		attrs = append(attrs, AttrAccountID.String(u.AccountID))
	}
	if e.ErrorType != "" {
		attrs = append(attrs, AttrErrorType.String(e.ErrorType))
	}
	attrs = t.subjectAttrs(attrs, e.Subject)
	if e.Recorded {
		attrs = append(attrs,
			AttrInputTokens.Int64(u.InputTokens),
			AttrCachedTokens.Int64(u.CachedInputTokens),
			AttrOutputTokens.Int64(u.OutputTokens),
			AttrReasoningTokens.Int64(u.ReasoningTokens),
		)
	}
	if u.ResponseID != "" {
		attrs = append(attrs, AttrResponseID.String(u.ResponseID))
	}
	if u.UpstreamModel != "" {
		attrs = append(attrs, AttrUpstreamModel.String(u.UpstreamModel))
	}
	st.span.SetAttributes(attrs...)
	if turnFailed(e) {
		desc := e.ErrorType
		if desc == "" {
			desc = u.Status
		}
		st.span.SetStatus(codes.Error, desc)
	}
	st.span.End() // the call comes as the turn ends
}

// turnFailed reports a turn the relay or its upstream failed: an error
// answer (rejections included), any 5xx, and a response that failed or
// broke. A client that left is not a failure of the relay.
func turnFailed(e relay.TurnEnd) bool {
	switch e.Usage.Status {
	case relay.TurnError, billing.StatusFailed, billing.StatusUpstreamError:
		return true
	}
	return e.Code >= 500
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
