package relay

import (
	"context"
	"net/http"
	"time"

	"github.com/relaykit/responsesrelay/internal/hookcall"
)

// A turn is one response.create on its way through the relay: a POST body
// (ServeHTTP, serve.go) or a message of another transport (serveMessage,
// serveturn.go). Both build it with newTurn and run it with serve
// (failover.go). Its state is split by the stage that writes it, so that
// the reader of each file knows what that file may touch:
//
//	part     what it holds                            written by
//	in       who asked for what: id, subject,         entry only (newTurn; ServeHTTP once it
//	         request, client headers, transport       has authenticated and parsed); read-only
//	                                                  once serve starts
//	client   the client end: ResponseWriter or        entry; answer.go, answer_json.go and
//	         event sink                               answer_stream.go write through it
//	admit    the user-slot wait, the body lease       entry (ServeHTTP sets the lease);
//	                                                  admission.go gives it back with the slot
//	money    whether the Ledger holds the turn        ledger.go
//	route    the scheduler request, the accounts      entry (setRequest); failover.go adds each
//	         excluded, the switches allowed           failed account; admission.go and bind read it
//	up       the attempts: their count, the current   upstream.go (and its answeredStream)
//	         credential, whether an upstream answered
//	renew    a rejected token's renewal: the token    credentials_refresh.go
//	         for the retry, whether it runs
//	conv     the chain continued (its record), what   conversation.go; upstreamBody sets what
//	         was done to the body, the output items   it did, failover.go the retry flags
//	rec      the one usage record                     usage.go
//	obs      what the Observer is told                observer.go
//
// ctx and hooks serve every stage: ctx is the client's context (the
// Observer's TurnStart may replace it, at entry only); hooks runs the turn's
// host calls, one at a time (hooks.go).
type turn struct {
	h      *Handler
	ctx    context.Context
	hooks  hookcall.Runner
	in     turnInput
	client turnClient
	admit  turnAdmit
	money  turnHold
	route  turnRoute
	up     turnAttempt
	renew  turnRenew
	conv   turnConv
	rec    turnRecord
	obs    turnObs
	bound  turnBind
}

// turnInput is who asked for what. The entry fills it; every stage reads
// it, none writes it once serve starts.
type turnInput struct {
	id        string // the request id: X-Relay-Request-Id, Usage.RequestID
	start     time.Time
	subj      *Subject // nil until ServeHTTP has authenticated
	req       *request // nil until ServeHTTP has parsed the body
	header    http.Header
	userAgent string
	clientIP  string
	transport string // "http", or serveMessage's ("ws" when not given)
	number    int    // the turn's number on its connection, from 1
	compact   bool   // POST …/responses/compact (compaction v1)
}

// newTurn builds the turn of either entry: ServeHTTP passes tr nil and
// sets the subject and the request once it has read them; serveMessage passes
// its messageTurn, whose options (upstream, preferred account, failover) apply here. newTurn names the turn, applies the defaults and
// starts observing it: TurnStart may replace ctx. The caller defers
// t.finish().
func (h *Handler) newTurn(ctx context.Context, in turnInput, client turnClient, tr *messageTurn) *turn {
	t := &turn{h: h, ctx: ctx, in: in, client: client}
	t.in.id, t.in.start = newRequestID(), h.now()
	t.admit.userWait = h.UserWait
	t.route.switches = h.maxSwitches()
	if tr != nil {
		if t.in.transport == "" {
			t.in.transport = "ws"
		}
		t.up.upstream = tr.Upstream
		t.conv.local = tr.Local
	}
	if t.in.number <= 0 {
		t.in.number = 1
	}
	if h.Observer != nil {
		t.obs.obs = h.Observer
		t.observeStart()
	}
	if in.req != nil {
		prefer := ""
		if tr != nil {
			prefer = tr.PreferAccount
		}
		t.setRequest(in.req, prefer)
	}
	return t
}

// finish ends the turn at its entry's return: TurnEnd, then the hook
// runner (its timer, the detached context of the late hooks).
func (t *turn) finish() {
	if t.observing() {
		t.observeEnd()
	}
	t.hooks.End()
}
