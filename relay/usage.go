package relay

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/internal/event"
	"github.com/relaykit/responsesrelay/scheduler"
)

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
	if !first.IsZero() {
		u.FirstTokenMS = first.Sub(t.start).Milliseconds()
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

func (t *turn) baseUsage() billing.Usage {
	return billing.Usage{
		RequestID:    t.id,
		UserID:       t.subj.UserID,
		APIKeyID:     t.subj.APIKeyID,
		GroupID:      t.subj.GroupID,
		Model:        t.req.Model,
		Transport:    t.transport,
		Stream:       t.req.Stream,
		Turn:         t.turnNo,
		Attempts:     t.attempt,
		FirstTokenMS: -1,
		UserAgent:    t.userAgent,
		ClientIP:     t.clientIP,
		CreatedAt:    t.start,
	}
}

// emit hands the record to the sink on a detached context. A sink error is
// logged with the whole record so that nothing is lost silently.
func (t *turn) emit(u billing.Usage) {
	if t.recorded {
		return
	}
	t.recorded = true
	u.DurationMS = t.h.now().Sub(t.start).Milliseconds()
	t.usage = u
	// Bounded and abandoned past the bound: a sink that hangs must not keep
	// the handler (and the client's end of stream) forever.
	err := t.hook(t.hooks.Detached(t.ctx), func(ctx context.Context) error { return t.h.usageSink.Record(ctx, u) })
	if err != nil && !errors.Is(err, billing.ErrDropped) { // Async already logged it whole
		rec, _ := json.Marshal(u)
		msg := "relay: usage sink failed; record not stored"
		if errors.Is(err, ErrHookTimeout) {
			msg = "relay: usage sink did not return in time; record may not be stored"
		}
		t.h.log.Error(msg, "request_id", u.RequestID, "error", err, "record", string(rec))
	}
}
