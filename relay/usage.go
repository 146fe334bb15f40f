package relay

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/internal/event"
	"github.com/relaykit/responsesrelay/internal/fastpath"
	"github.com/relaykit/responsesrelay/scheduler"
)

// turnRecord is the turn's one usage record: done once the turn writes no
// other (it was handed to the sink, or it is another's to write: a
// background response's tracker; or the turn has none: a token count),
// handed when it went to the sink, usage what was (or will be) written.
type turnRecord struct {
	done   bool
	handed bool
	usage  billing.Usage
	at     time.Time // when usage.DurationMS was taken
}

// recordServed writes the one usage record of a turn an account served.
func (t *turn) recordServed(sel *scheduler.Selection, status string, r event.Response, responseID string, first time.Time) {
	u := t.baseUsage()
	u.AccountID = sel.Account.ID
	u.UpstreamModel = sel.UpstreamModel
	u.ResponseID = responseID
	u.Status = status
	u.InputTokens = r.Usage.Input
	u.CachedInputTokens = r.Usage.CachedInput
	u.OutputTokens = r.Usage.Output
	u.ReasoningTokens = r.Usage.Reasoning
	u.TotalTokens = r.Usage.Total
	u.ServiceTier = r.ServiceTier
	u.ContextRebuilt = t.conv.rebuilt
	if !first.IsZero() {
		u.FirstTokenMS = first.Sub(t.in.start).Milliseconds()
	}
	t.emit(u)
}

// record writes the record of a turn that reached an upstream but was not
// served (every attempt failed, or the client left first).
func (t *turn) record(status string, _ error) {
	u := t.baseUsage()
	u.Status = status
	t.emit(u)
}

// baseUsage is what is known of the turn before an upstream answers. The
// subject and the request are nil for an HTTP turn rejected before
// authentication or parsing (TurnEnd reports those too).
func (t *turn) baseUsage() billing.Usage {
	u := billing.Usage{
		RequestID:    t.in.id,
		Transport:    t.in.transport,
		Turn:         t.in.number,
		Attempts:     t.up.n,
		FirstTokenMS: -1,
		UserAgent:    t.in.userAgent,
		ClientIP:     t.in.clientIP,
		CreatedAt:    t.in.start,
	}
	if s := t.in.subj; s != nil {
		u.UserID, u.APIKeyID, u.GroupID = s.UserID, s.APIKeyID, s.GroupID
	}
	if r := t.in.req; r != nil {
		u.Model, u.Stream = r.Model, r.Stream
	}
	return u
}

// emit hands the record to the sink on a detached context. A sink error is
// logged with the whole record so that nothing is lost silently.
func (t *turn) emit(u billing.Usage) {
	if t.rec.done {
		return
	}
	t.rec.done, t.rec.handed = true, true
	t.rec.at = t.h.now()
	u.DurationMS = t.rec.at.Sub(t.in.start).Milliseconds()
	t.h.price(&u)
	t.rec.usage = u
	// Bounded and abandoned past the bound: a sink that hangs must not keep
	// the handler (and the client's end of stream) forever.
	t.h.handUsage(t.hooks.Detached(t.ctx), t.hook, u)
}

// handUsage hands u to the sink through call, the caller's bound on host
// code. A sink error is logged with the whole record so that nothing is
// lost silently.
func (h *Handler) handUsage(ctx context.Context, call func(context.Context, func(context.Context) error) error, u billing.Usage) {
	if h.usageQueue && fastpath.EnqueueUsage(h.usageSink, &u) {
		return // a billing.Async with room: queued without a hook call
	}
	err := call(ctx, func(ctx context.Context) error { return h.usageSink.Record(ctx, u) })
	if err != nil && !errors.Is(err, billing.ErrDropped) { // Async already logged it whole
		rec, _ := json.Marshal(u)
		msg := "relay: usage sink failed; record not stored"
		if errors.Is(err, ErrHookTimeout) {
			msg = "relay: usage sink did not return in time; record may not be stored"
		}
		h.log.Error(msg, "request_id", u.RequestID, "error", err, "record", string(rec))
	}
}

func (t *turn) finishClientGone(ae *attemptError) {
	if t.up.reached {
		t.record(billing.StatusClientGone, nil)
	}
}

func (t *turn) recordFailure(ae *attemptError) {
	if t.up.reached {
		t.record(billing.StatusUpstreamError, nil)
	}
}
