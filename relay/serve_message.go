package relay

import (
	"context"
	"errors"
	"net/http"

	"github.com/relaykit/responsesrelay/scheduler"
)

// Turn is one turn that arrived on a transport other than POST (the
// Responses WebSocket mode), for serveMessage.
type messageTurn struct {
	Subject *Subject
	// Request is the validated message (parseRequest). Its Body is sent
	// upstream: as a message through Upstream, or as a streaming POST body
	// (without "type", with "stream": true) through the HTTP bridge.
	Request *request
	// Header holds the client's headers; the allowlisted ones go upstream,
	// and User-Agent is recorded in Usage.UserAgent.
	Header    http.Header
	Transport string // recorded in Usage.Transport, e.g. "ws"
	Number    int    // the turn's number on its connection, from 1
	ClientIP  string
	// PreferAccount is tried first (with the escape rules of a sticky
	// binding): the account a connection is pinned to.
	PreferAccount string
	// Local is the connection's last response with its context (nil:
	// none yet, or not held whole).
	Local *localChain
	// Upstream serves attempts on accounts with WebSocket set; other
	// accounts (and nil Upstream) get the HTTP bridge: a streaming POST.
	Upstream socketUpstream
}

// messageSink is the client end of a turn served by serveMessage. A sink that
// can hold events back and write a burst at once may also have the methods
// SendBuffered(typ string, data []byte) error (send, held) and Flush()
// error (write out what is held): the relay then holds events while the
// upstream has more ready, and calls Flush before it could wait for the
// upstream, and at the end.
type messageSink interface {
	// Send delivers one event's JSON; typ is its type. An error means the
	// client is gone: the relay stops sending and drains the upstream.
	Send(typ string, data []byte) error
	// Fail delivers the error that ended the turn without a terminal
	// event (validation passed, then admission or every upstream failed).
	Fail(e *APIError)
}

// batchMessageSink is a messageSink with the optional burst methods.
type batchMessageSink interface {
	messageSink
	SendBuffered(typ string, data []byte) error
	Flush() error
}

// Upstream opens the event stream of one attempt on an account.
type socketUpstream interface {
	// Open sends body to the account and returns its events. ctx ends
	// when the relay aborts the attempt (idle upstream, drain limit): the
	// stream must then fail its Next. An upstream refusal with a status
	// (a handshake answered 429, an error frame before any event) should
	// be an *UpstreamError, so that the failover rules apply to it.
	Open(ctx context.Context, a *scheduler.Account, token string, body []byte) (eventStream, error)
}

// errUseHTTP, returned (or wrapped) by Upstream.Open before it sent
// anything, sends the attempt through the HTTP bridge instead, on the same
// account and without counting against it: for an Upstream that declines
// for a reason of its own (a local cap on open sockets).
var errUseHTTP = errors.New("relay: attempt sent through the HTTP bridge")

// eventStream is one attempt's upstream events. A stream that can tell
// whether Next would return at once may also have a Pending() bool method;
// with a sink that can hold events (see messageSink), the relay then writes bursts of events together.
type eventStream interface {
	// Next returns the next event's JSON, valid until the next call.
	Next() ([]byte, error)
	// Close ends the attempt; it is called once, after the last Next.
	Close() error
}

// messageResult says how a turn served by serveMessage went.
type messageResult struct {
	// AccountID is the account that served the turn ("" when none did).
	AccountID string
	// ResponseID is the upstream's response id, when one was created.
	ResponseID string
	// Status is the usage status (billing.Status*), or "" when the turn
	// never reached an upstream.
	Status string
	// Err is the error sent through messageSink.Fail, if any.
	Err *APIError
	// Local is the connection's chain after the turn: the served response
	// with its context; the turn's Local again when nothing was served.
	Local *localChain
}

// serveMessage runs one turn through the same pipeline as ServeHTTP: user
// slot, billing gate, account selection, failover before the first event,
// event relaying with the streaming rules, and one usage record. Events
// and errors go to sink. ctx is the client's: when it ends, the turn drains
// its upstream for usage (DrainTimeout) and returns.
func (h *Handler) serveMessage(ctx context.Context, tr *messageTurn, sink messageSink) messageResult {
	h.init()
	h.active.add()
	defer h.active.done()
	req := *tr.Request
	req.Stream = true
	// The turn's hooks see a context that ends with the turn, not only
	// with the connection.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ts := &turnSink{sink: sink}
	ts.batch, _ = sink.(batchMessageSink)
	t := h.newTurn(ctx, turnInput{subj: tr.Subject, req: &req, header: tr.Header, userAgent: tr.Header.Get("User-Agent"),
		clientIP: tr.ClientIP, transport: tr.Transport, number: tr.Number}, turnClient{out: ts}, tr)
	defer t.finish()
	t.serve()
	u := &t.rec.usage
	local := tr.Local
	if t.conv.nextLocal != nil || t.rec.usage.ResponseID != "" && u.Status != "" {
		local = t.conv.nextLocal
	}
	return messageResult{AccountID: u.AccountID, ResponseID: u.ResponseID, Status: u.Status, Err: ts.err, Local: local}
}

// turnSink adapts a messageSink to the relay's event sink.
type turnSink struct {
	sink  messageSink
	batch batchMessageSink // sink, when it can batch; nil otherwise
	err   *APIError
}

func (s *turnSink) Send(typ string, data []byte) error { return s.sink.Send(typ, data) }

// SendBuffered and Flush make every turnSink a pump.BatchSink; a messageSink
// that cannot batch gets each event flushed.
func (s *turnSink) SendBuffered(typ string, data []byte) error {
	if s.batch != nil {
		return s.batch.SendBuffered(typ, data)
	}
	return s.sink.Send(typ, data)
}

func (s *turnSink) Flush() error {
	if s.batch != nil {
		return s.batch.Flush()
	}
	return nil
}

func (s *turnSink) Ping() error { return nil } // the transport keeps itself alive

func (s *turnSink) setUpstreamHeader(http.Header) {}

func (s *turnSink) fail(e *APIError) {
	s.err = e
	s.sink.Fail(e)
}
