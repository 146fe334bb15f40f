package relay

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/internal/knob"
	"github.com/tidwall/gjson"
)

// Money, per turn (billing.Ledger has the contract):
//
//	admission   Gate.Check, then the price check (Prices.RefuseUnpriced),
//	            then Ledger.Hold with the turn's estimate; the answer
//	            carries what the key has left
//	the turn    attempts, failover: the hold stands
//	its end     a usage record (CostMicros from Prices) goes to the sink,
//	            where billing.Settling settles it; a turn with no record
//	            (no upstream reached) is released here
//
// The hold is the turn's from Hold's success to that end; a Hold that
// returns after its bound was abandoned is released at once.

// turnHold is the turn's hold: held once Ledger.Hold admitted it.
type turnHold struct {
	held bool
}

// defaultOutputCap is the output a turn without max_output_tokens is held
// for.
const defaultOutputCap = 8192

func (h *Handler) outputCap() int64 {
	return int64(max(knob.Or(h.DefaultOutputCap, defaultOutputCap), 0))
}

// estimate is the turn's hold in tokens and micro-USD: the body's bytes / 3
// (rounded up: a token is rarely shorter than three bytes of a JSON body)
// as input, plus max_output_tokens, else DefaultOutputCap, as output.
func (t *turn) estimate() (tokens, micros int64) {
	in := (int64(len(t.in.req.Body)) + 2) / 3
	out := t.h.outputCap()
	if m := gjson.GetBytes(t.in.req.Body, "max_output_tokens"); m.Type == gjson.Number && m.Int() > 0 {
		out = m.Int()
	}
	micros, _ = t.h.Prices.Cost(t.in.req.Model, t.in.subj.GroupID, billing.Usage{InputTokens: in, OutputTokens: out})
	return in + out, micros
}

// checkPrice refuses a model the price table has no price for, when the
// table says so.
func (t *turn) checkPrice() error {
	p := t.h.Prices
	if p == nil || !p.RefuseUnpriced {
		return nil
	}
	if _, ok := p.Cost(t.in.req.Model, t.in.subj.GroupID, billing.Usage{}); ok {
		return nil
	}
	return &APIError{Status: http.StatusBadRequest, Type: "invalid_request_error", Param: "model", Code: "model_not_priced",
		Message: "The model '" + t.in.req.Model + "' has no price on this relay."}
}

// hold asks the Ledger to hold the turn's estimate. A *billing.Denial is
// answered as the ledger wrote it; any other error fails closed with 503.
func (t *turn) hold() error {
	l := t.h.Ledger
	if l == nil {
		return nil
	}
	tokens, micros := t.estimate()
	s := t.in.subj
	q := billing.Request{UserID: s.UserID, APIKeyID: s.APIKeyID, GroupID: s.GroupID, Model: t.in.req.Model,
		Stream: t.in.req.Stream, Transport: t.in.transport, Meta: s.Meta, RequestID: t.in.id,
		HoldMicros: micros, HoldTokens: tokens, KeyLimits: s.KeyLimits, UserLimits: s.UserLimits, Now: t.in.start}
	var left billing.Remaining
	var err error
	if ml, ok := l.(*billing.MemoryLedger); ok {
		// In memory: it cannot hang, so no bounded call and its goroutine.
		left, err = ml.Hold(t.ctx, q)
	} else {
		id := t.in.id
		err = hookErr(t.hooks.Call(t.ctx, t.h.hookTimeout(), func(ctx context.Context) error {
			var err error
			left, err = l.Hold(ctx, q)
			return err
		}, func(err error) {
			if err == nil { // held after the turn gave up on it
				t.h.release(id)
			}
		}, nil, 0))
	}
	if err == nil {
		t.money.held = true
		t.remainingHeaders(left)
		return nil
	}
	if _, ok := errors.AsType[*billing.Denial](err); ok {
		return err
	}
	if t.ctx.Err() != nil {
		return errClientGone
	}
	t.h.log.Error("relay: ledger failed; refusing the request", "request_id", t.in.id, "user", s.UserID, "error", err)
	return &APIError{Status: http.StatusServiceUnavailable, Type: "server_error", Message: "Billing service unavailable, please retry later"}
}

// endHold releases a hold whose turn has no usage record, now or later (a
// background response's tracker writes one when it ends): no upstream was
// reached, so nothing will settle it.
func (t *turn) endHold() {
	if t.money.held && !t.rec.done {
		t.h.release(t.in.id)
	}
}

// release ends a hold, bounded, on a context of its own: the client may
// be gone.
func (h *Handler) release(id string) {
	err := h.bounded(context.Background(), func(ctx context.Context) error { return h.Ledger.Release(ctx, id) })
	if err != nil {
		h.log.Error("relay: ledger release failed; the hold stands until it expires", "request_id", id, "error", err)
	}
}

// remainingHeaders tells an HTTP client what its key has left. Another
// transport has no headers per turn.
func (t *turn) remainingHeaders(r billing.Remaining) {
	w := t.client.w
	if w == nil {
		if sw, ok := t.client.out.(*sseWriter); ok {
			w = sw.w
		}
	}
	if w == nil {
		return
	}
	hdr := w.Header()
	vals := make([]string, 3) // one backing array for the three values
	set := func(i int, key string, n int64) {
		if n >= 0 {
			vals[i] = strconv.FormatInt(n, 10)
			hdr[key] = vals[i : i+1 : i+1]
		}
	}
	set(0, "X-Ratelimit-Remaining-Requests", r.Requests)
	set(1, "X-Ratelimit-Remaining-Tokens", r.Tokens)
	set(2, "X-Relay-Budget-Remaining-Micros", r.BudgetMicros)
}

// price fills u's cost from the price table. A model without a price costs
// zero and is logged once (up to maxUnpricedLogged models).
func (h *Handler) price(u *billing.Usage) {
	if h.Prices == nil {
		return
	}
	cost, ok := h.Prices.Cost(u.Model, u.GroupID, *u)
	u.CostMicros = cost
	if !ok && u.Model != "" && h.unpriced.n.Load() < maxUnpricedLogged {
		if _, logged := h.unpriced.m.LoadOrStore(u.Model, true); !logged {
			h.unpriced.n.Add(1)
			h.log.Warn("relay: model has no price; its turns cost zero", "model", u.Model)
		}
	}
}

// unpricedModels remembers the models logged as unpriced: a bounded set,
// since model names come from clients.
type unpricedModels struct {
	m sync.Map
	n atomic.Int64
}

const maxUnpricedLogged = 1024
