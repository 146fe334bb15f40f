package relay

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/internal/event"
	"github.com/relaykit/responsesrelay/internal/pump"
	"github.com/relaykit/responsesrelay/internal/sse"
	"github.com/relaykit/responsesrelay/scheduler"
)

// relayEvents pumps an upstream's events to the client. status and header
// are the upstream's HTTP answer, when there was one.
//
// A stream's goroutine spends its idle time parked under this frame, and
// the depth it is parked at decides its stack size (the runtime halves a
// stack at a GC only while less than a quarter of it is in use). So the
// pump's Options and Result stay out of this frame, and what is done
// before and after the run is in frames of its own (newPump,
// eventsRelayed); see BENCHMARKS.md, "Memory per open stream".
func (t *turn) relayEvents(sel *scheduler.Selection, src pump.Source, status int, header http.Header, abort func()) *attemptError {
	t.client.out.setUpstreamHeader(header)
	res := t.newPump(sel, abort).Run(t.ctx, src, t.client.out)
	return t.eventsRelayed(sel, res, status, header)
}

// newPump prepares the pump run of relayEvents.
//
//go:noinline
func (t *turn) newPump(sel *scheduler.Selection, abort func()) *pump.Runner {
	h := t.h
	o := pump.Options{
		// Held even on the last attempt: a refusal then becomes the mapped
		// exhausted error (503, 429) rather than a 200 stream that failed.
		HoldBootstrap:  true,
		KeepAlive:      h.keepAlive(),
		IdleTimeout:    h.idleTimeout(),
		DrainTimeout:   h.drainTimeout(),
		Abort:          abort,
		RequestedModel: t.in.req.Model,
		UpstreamModel:  sel.UpstreamModel,
		Now:            h.Scheduler.Now,
		// Error and failed events pass through after output; they may
		// echo the credential.
		Sanitize: func(b []byte) []byte { return sanitize(b, t.up.token) },
		// Each bootstrap event echoes the request's instructions and tools:
		// room for two such echoes beyond the fixed bound.
		MaxHeldBytes: pump.DefaultMaxHeldBytes + 2*len(t.in.req.Body),
		// Bound before the client sees the turn end, so that a next turn
		// sent at once finds its account and its owner.
		// So is the conversation record.
		BeforeTerminal: func(typ, id string, data []byte) {
			t.recordTurn(sel, typ, id, event.RawAt(data, "response.output"))
			if !t.awaitBind(sel) {
				t.bind(sel, typ, id)
			}
		},
		// With shared stores the binding is written while the events flow
		// (bind_early.go).
		FirstOutput: func(id string) { t.bindEarly(sel, id) },
	}
	if t.in.req.items.trigger {
		// A compaction's terminal event may carry an empty output: its
		// item is kept from the stream (collectItem).
		o.OutputItem = t.collectItem
	}
	return pump.New(o)
}

// eventsRelayed reports and records the pump run of relayEvents.
//
//go:noinline
func (t *turn) eventsRelayed(sel *scheduler.Selection, res *pump.Result, status int, header http.Header) *attemptError {
	h, acct := t.h, sel.Account
	bound := t.awaitBind(sel) // the run may have ended without a terminal event
	switch res.End {
	case pump.EndRefused:
		if res.Refusal != nil {
			refusal := sanitize(res.Refusal, t.up.token)
			h.observe(acct.ID, scheduler.Outcome{Kind: scheduler.OutcomeOverloaded, Status: status, Header: header, Body: refusal})
			return &attemptError{kind: failInBand, account: acct.ID, status: status, header: header, refusal: refusal}
		}
		var ue *UpstreamError
		if errors.As(res.Err, &ue) && ue.Status > 0 {
			// A refusal with a status in place of the first event (a
			// WebSocket upstream's error frame): the status rules apply.
			return t.statusError(acct, ue.Status, ue.Header, ue.Body, []string{t.up.token})
		}
		h.observe(acct.ID, scheduler.Outcome{Kind: scheduler.OutcomeStreamError, Err: res.Err})
		return &attemptError{kind: failInBand, account: acct.ID, err: res.Err, idleAbort: res.IdleTimeout}
	case pump.EndBroken:
		h.observe(acct.ID, scheduler.Outcome{Kind: scheduler.OutcomeStreamError, Err: res.Err})
		h.log.Warn("relay: upstream stream broke after output", "request_id", t.in.id, "account", acct.ID, "error", res.Err)
	default:
		if res.TerminalType != "" {
			h.observe(acct.ID, scheduler.Outcome{Kind: scheduler.OutcomeSuccess, TTFT: t.ttft(res.FirstOutput)})
		} else if res.Err != nil && !errors.Is(res.Err, context.Canceled) {
			h.observe(acct.ID, scheduler.Outcome{Kind: scheduler.OutcomeStreamError, Err: res.Err})
		}
	}
	if status == 0 {
		status = http.StatusOK
	}
	t.answered(status, "")
	if t.in.req.background && res.TerminalType == "" && res.ResponseID != "" {
		// The client left (or the stream broke) but the background
		// response runs on upstream: bound, and recorded when it ends.
		if !bound {
			t.bind(sel, "", res.ResponseID)
		}
		if t.trackBackground(sel, event.Response{ID: res.ResponseID}) {
			return nil
		}
	}
	recStatus := terminalStatus(res.TerminalType)
	switch {
	case res.End == pump.EndClientGone:
		recStatus = billing.StatusClientGone
	case res.End == pump.EndBroken, t.conv.chatNoUsage:
		recStatus = billing.StatusUpstreamError
	}
	t.recordServed(sel, recStatus, res.Response, res.ResponseID, res.FirstOutput)
	return nil
}

func terminalStatus(typ string) string {
	switch typ {
	case event.TypeCompleted:
		return billing.StatusCompleted
	case event.TypeIncomplete:
		return billing.StatusIncomplete
	case event.TypeFailed:
		return billing.StatusFailed
	}
	return billing.StatusUpstreamError
}

func (t *turn) ttft(first time.Time) time.Duration {
	if first.IsZero() {
		return 0
	}
	return first.Sub(t.in.start)
}

// sseSource adapts the SSE reader to pump.Source.
type sseSource struct{ r *sse.Reader }

// sseReaders recycles readers and their buffers across attempts.
var sseReaders = sync.Pool{New: func() any { return &sseSource{r: sse.NewReaderSize(nil, sseBufferSize)} }}

// sseBufferSize is the read buffer an upstream stream keeps, and waits
// in while the upstream is silent: one typical delta event. A burst of
// events borrows a 32 KiB buffer from a shared pool (internal/sse), and a
// longer line is assembled in the reader's own buffer, so an idle stream
// holds only this much.
const sseBufferSize = 512

// maxPooledEvent: a reader that held an event larger than this is not
// kept, so one huge event does not pin its memory in the pool.
const maxPooledEvent = 1 << 20

func newSSESource(body io.Reader, maxEvent int) *sseSource {
	s := sseReaders.Get().(*sseSource)
	s.r.Reset(body)
	s.r.MaxEventBytes = maxEvent
	return s
}

func (s *sseSource) free() {
	if s.r.BufferedCap() > maxPooledEvent {
		return
	}
	s.r.Reset(nil)
	sseReaders.Put(s)
}

// Pending reports that a whole event is already buffered.
func (s *sseSource) Pending() bool { return s.r.Pending() }

func (s *sseSource) Next() ([]byte, error) {
	// A silent upstream is waited for here rather than deep in the
	// reader's Next: the stack of an idle stream stays shallower (see
	// relayEvents).
	s.r.Wait()
	ev, err := s.r.Next()
	return ev.Data, err
}
