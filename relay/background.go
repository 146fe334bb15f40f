package relay

import (
	"context"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/internal/event"
	"github.com/relaykit/responsesrelay/internal/knob"
	"github.com/relaykit/responsesrelay/internal/pump"
	"github.com/relaykit/responsesrelay/scheduler"
)

// Background responses (background: true) are answered at once with the
// upstream's queued response and run on without a slot; their usage is
// known only when they end. The relay writes their one usage record when
// it first sees them in a terminal state: in a client's retrieve (JSON or
// stream) or cancel, or by polling the upstream itself every
// BackgroundPoll, so that a client that never asks is billed too.
const (
	defaultBackgroundPoll = 5 * time.Second
	// backgroundDeadline is how long a background response is polled: one
	// still running after it is recorded as an upstream error with the
	// usage known, and logged.
	backgroundDeadline = 6 * time.Hour
	// maxBackground bounds the background responses tracked at once; past
	// it a new one is recorded at once (queued, no tokens) and logged.
	maxBackground = 100_000
)

// background tracks the background responses waiting for their usage
// record. The zero value is ready; a Handler starts its poller on the first
// response and stops it at Shutdown.
type background struct {
	mu      sync.Mutex
	pending map[string]*pendingBG
	started bool
	stop    chan struct{}
	done    chan struct{}
}

// pendingBG is a background response and the record it will get.
type pendingBG struct {
	usage    billing.Usage
	account  *scheduler.Account
	apiKeyID string
	deadline time.Time
}

// track remembers a background response until it ends.
func (b *background) track(h *Handler, id string, p *pendingBG) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pending == nil {
		b.pending = make(map[string]*pendingBG)
	}
	if len(b.pending) >= maxBackground {
		return false
	}
	b.pending[id] = p
	if !b.started && h.backgroundPoll() > 0 {
		b.started = true
		b.stop, b.done = make(chan struct{}), make(chan struct{})
		go b.poll(h)
	}
	return true
}

// take removes id if it is pending, so that exactly one caller records it.
func (b *background) take(id string) *pendingBG {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.pending[id]
	delete(b.pending, id)
	return p
}

// seen records a tracked background response that a client's retrieve or
// cancel showed in a terminal state (body is the response object).
func (b *background) seen(h *Handler, id string, body []byte) {
	r := event.ParseBody(body)
	if !endedStatus(r.Status) {
		return
	}
	if p := b.take(id); p != nil {
		h.recordBackground(p, id, r)
	}
}

func endedStatus(s string) bool {
	switch s {
	case billing.StatusCompleted, billing.StatusIncomplete, billing.StatusFailed, "cancelled":
		return true
	}
	return false
}

// recordBackground writes the one usage record of a background response.
func (h *Handler) recordBackground(p *pendingBG, id string, r event.Response) {
	u := p.usage
	u.Status = r.Status
	if u.Status == "cancelled" {
		u.Status = billing.StatusIncomplete
	}
	u.InputTokens, u.CachedInputTokens = r.Usage.Input, r.Usage.CachedInput
	u.OutputTokens, u.ReasoningTokens, u.TotalTokens = r.Usage.Output, r.Usage.Reasoning, r.Usage.Total
	if r.ServiceTier != "" {
		u.ServiceTier = r.ServiceTier
	}
	u.DurationMS = h.now().Sub(u.CreatedAt).Milliseconds()
	h.price(&u)
	h.handUsage(context.Background(), h.bounded, u)
}

// poll asks the upstream for every pending background response each
// interval until it ends, its deadline passes, or Shutdown.
func (b *background) poll(h *Handler) {
	defer close(b.done)
	// One context for every poll: Shutdown ends it, and the call in flight.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-b.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	tick := time.NewTicker(h.backgroundPoll())
	defer tick.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-tick.C:
		}
		b.mu.Lock()
		ids := make([]string, 0, len(b.pending))
		for id := range b.pending {
			ids = append(ids, id)
		}
		b.mu.Unlock()
		for _, id := range ids {
			select {
			case <-b.stop:
				return
			default:
			}
			b.pollOne(ctx, h, id)
		}
	}
}

// pollOne retrieves one pending background response. An upstream that
// fails is asked again at the next tick.
func (b *background) pollOne(ctx context.Context, h *Handler, id string) {
	b.mu.Lock()
	p := b.pending[id]
	b.mu.Unlock()
	if p == nil {
		return
	}
	resp, token, apiErr := h.callAccount(ctx, p.account, http.MethodGet, "/responses/"+url.PathEscape(id), "", nil, nil, h.jsonHeaderTimeout())
	var r event.Response
	ok := false
	if apiErr == nil {
		body, err := readLimited(resp.Body, resp.ContentLength, h.maxEventBytes())
		resp.Body.Close()
		if err == nil && resp.StatusCode < 300 && validJSON(body) {
			r, ok = event.ParseBody(sanitize(body, token)), true
		} else if resp.StatusCode == http.StatusNotFound {
			// Deleted upstream: nothing more will be known.
			if p := b.take(id); p != nil {
				h.log.Warn("relay: a background response vanished upstream before it ended; recorded without usage", "response_id", id)
				h.recordBackground(p, id, event.Response{Status: billing.StatusUpstreamError})
			}
			return
		}
	}
	if ok && endedStatus(r.Status) {
		if p := b.take(id); p != nil {
			h.recordBackground(p, id, r)
		}
		return
	}
	if h.now().After(p.deadline) {
		if p := b.take(id); p != nil {
			h.log.Warn("relay: a background response outlived the polling deadline; recorded as it stood", "response_id", id, "status", r.Status)
			r.Status = billing.StatusUpstreamError
			h.recordBackground(p, id, r)
		}
	}
}

// shutdown stops the poller and logs what it leaves unrecorded.
func (b *background) shutdown(h *Handler) {
	b.mu.Lock()
	started := b.started
	if started {
		b.started = false
		close(b.stop)
	}
	left := len(b.pending)
	b.mu.Unlock()
	if started {
		<-b.done
	}
	if left > 0 {
		h.log.Warn("relay: background responses still running at shutdown are not recorded", "count", left)
	}
}

func (h *Handler) backgroundPoll() time.Duration {
	return knob.Or(h.BackgroundPoll, defaultBackgroundPoll)
}

// backgroundTurn reports a turn that asked for background mode.
func (t *turn) backgroundTurn() bool { return t.in.req.background }

// trackBackground takes over the usage record of a background response
// the upstream answered queued or in progress: written when it ends.
func (t *turn) trackBackground(sel *scheduler.Selection, r event.Response) bool {
	u := t.baseUsage()
	u.AccountID = sel.Account.ID
	u.UpstreamModel = sel.UpstreamModel
	u.ResponseID = r.ID
	p := &pendingBG{usage: u, account: sel.Account, apiKeyID: t.in.subj.APIKeyID, deadline: t.h.now().Add(backgroundDeadline)}
	if !t.h.bg.track(t.h, r.ID, p) {
		t.h.log.Warn("relay: too many background responses tracked; this one is recorded as queued", "response_id", r.ID)
		return false
	}
	t.rec.done, t.rec.usage = true, u // the record is the tracker's now
	return true
}

// relayStoredStream relays a retrieve with stream=true: the events of a
// stored (usually background) response, from starting_after on. A
// terminal event records a tracked background response.
func (h *Handler) relayStoredStream(w http.ResponseWriter, r *http.Request, acct *scheduler.Account, resp *http.Response, token string, subj *Subject, id string) {
	sw := newSSEWriter(w, h.ReturnHeaders, h.clientWriteTimeout(), h.warnNoFlush)
	defer sw.close()
	sw.setUpstreamHeader(resp.Header)
	src := newSSESource(resp.Body, h.MaxEventBytes)
	defer src.free()
	pump.Run(r.Context(), src, sw, pump.Options{
		KeepAlive:   h.keepAlive(),
		IdleTimeout: h.idleTimeout(),
		Abort:       func() { resp.Body.Close() },
		Sanitize:    func(b []byte) []byte { return sanitize(b, token) },
		BeforeTerminal: func(typ, _ string, data []byte) {
			h.bg.seen(h, id, event.RawAt(data, "response"))
		},
	})
}
