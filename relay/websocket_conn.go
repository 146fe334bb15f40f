package relay

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/coder/websocket"
	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/internal/headers"
	"github.com/tidwall/gjson"
)

// conn is one client connection.
type conn struct {
	h      *wsServer
	ws     *websocket.Conn
	subj   *Subject
	header http.Header
	ip     string
	ctx    context.Context // ends when the client is gone
	cancel context.CancelFunc

	msgs  chan []byte // response.create messages for the turn loop
	limit int64       // the largest client message

	out    *batchConn  // the client's socket, to hold a burst of writes
	up     *upstream   // the pinned upstream socket, if any
	pinned string      // account that served the last turn
	local  *localChain // the last response with its context (connection-local state)
	turns  int
}

func newConn(h *wsServer, ws *websocket.Conn, r *http.Request, subj *Subject) *conn {
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	c := &conn{h: h, ws: ws, subj: subj, header: r.Header.Clone(), ip: headers.ClientIP(r),
		ctx: ctx, cancel: cancel, msgs: make(chan []byte, 1)}
	c.up = &upstream{h: h, header: c.header}
	c.limit = h.relay.maxBody() // a message is a body
	ws.SetReadLimit(c.limit)
	return c
}

// run serves the connection until it closes.
func (c *conn) run() {
	defer c.cancel()
	defer c.up.close()
	defer c.keepLocal(nil)
	readDone := make(chan struct{})
	go func() { defer close(readDone); c.readLoop() }()
	pingDone := make(chan struct{})
	go func() { defer close(pingDone); keepAlive(c.ctx, c.ws, c.h) }()
	defer func() {
		c.cancel()
		c.ws.CloseNow()
		<-readDone
		<-pingDone
	}()

	first := time.NewTimer(c.h.firstMessageTimeout())
	defer first.Stop()
	stopping := c.h.stop()
	for {
		select {
		case <-stopping: // no new turn once Shutdown began, even a queued one
			c.close(websocket.StatusGoingAway, "server shutting down, please reconnect")
			return
		default:
		}
		var msg []byte
		select {
		case <-stopping:
			c.close(websocket.StatusGoingAway, "server shutting down, please reconnect")
			return
		case msg = <-c.msgs:
		case <-first.C:
			if c.turns == 0 {
				c.close(websocket.StatusPolicyViolation, "no response.create within the first message timeout")
				return
			}
		case <-c.ctx.Done():
			return
		}
		if msg == nil {
			continue
		}
		first.Stop()
		if !c.turn(msg) {
			return
		}
	}
}

// readLoop reads client messages for the whole connection, so that pings
// and pongs are processed even during a turn.
func (c *conn) readLoop() {
	defer c.cancel()
	for {
		typ, data, err := c.ws.Read(c.ctx)
		if err != nil {
			return // closed, too big (coder/websocket sends 1009), or gone
		}
		if int64(len(data)) > c.limit {
			// coder/websocket lets one byte over its limit through.
			c.close(websocket.StatusMessageTooBig, "message over the read limit")
			return
		}
		if code, reason := checkFrame(typ, data); code != 0 {
			c.close(code, reason)
			return
		}
		// One message may wait while a turn finishes its bookkeeping after
		// the terminal event (clients send the next turn at once); a second
		// one means the client is not waiting for terminal events.
		select {
		case c.msgs <- data:
		default:
			c.sendError(&APIError{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: "response_in_progress",
				Message: "A response is already in progress on this connection; wait for its terminal event before sending response.create"})
		}
	}
}

// turn serves one response.create; false means the connection is closed.
func (c *conn) turn(msg []byte) bool {
	req, apiErr := parseTurn(msg)
	if apiErr != nil {
		c.sendError(apiErr)
		return true
	}
	c.turns++
	msg = req.Body
	res := c.h.relay.serveMessage(c.ctx, &messageTurn{
		Subject: c.subj, Request: req, Header: c.header, Transport: "ws", Number: c.turns,
		ClientIP: c.ip, PreferAccount: c.pinned, Local: c.local,
		Upstream: c.up,
	}, c)
	if c.out != nil {
		// Whatever ended the turn, nothing stays held: a frame the library
		// writes next (a close) must go out when written.
		c.out.release()
	}
	if res.AccountID != "" {
		c.pinned = res.AccountID
	}
	c.keepLocal(res.Local)
	if c.ctx.Err() != nil {
		return false
	}
	if e := res.Err; e != nil && (e.Status == http.StatusTooManyRequests || e.Status == http.StatusServiceUnavailable) &&
		res.Status != billing.StatusCompleted {
		c.close(websocket.StatusTryAgainLater, e.Message)
		return false
	}
	return true
}

// Send forwards one event as a text frame and flushes what SendBuffered
// held (messageSink).
func (c *conn) Send(_ string, data []byte) error {
	if c.out != nil {
		return c.out.writeText(data, true)
	}
	// Background: a cancellable context costs coder/websocket a timer per
	// write. A client that stops reading is cut by the ping keepalive,
	// which ends a blocked Write.
	return c.ws.Write(context.Background(), websocket.MessageText, data)
}

// SendBuffered forwards one event and leaves it unflushed: more events are
// ready (the optional burst method of messageSink).
func (c *conn) SendBuffered(_ string, data []byte) error {
	if c.out == nil {
		return c.Send("", data)
	}
	c.out.hold()
	return c.out.writeText(data, false)
}

// Flush writes out the events SendBuffered held (the optional burst method of messageSink).
func (c *conn) Flush() error {
	if c.out == nil {
		return nil
	}
	return c.out.release()
}

// Fail sends the error that ended a turn (messageSink).
func (c *conn) Fail(e *APIError) { c.sendError(e) }

// sendError writes {"type":"error","status":N,"error":{...}}, as the
// relay's events are written, so that the library writes only control
// frames to the batch connection.
func (c *conn) sendError(e *APIError) {
	if c.out != nil {
		c.out.writeText(errorFrame(e), true)
		return
	}
	c.ws.Write(c.ctx, websocket.MessageText, errorFrame(e))
}

func errorFrame(e *APIError) []byte {
	b := []byte(`{"type":"error","status":`)
	b = strconv.AppendInt(b, int64(e.Status), 10)
	b = append(b, `,"error":`...)
	inner := gjson.GetBytes(e.JSON(), "error").Raw
	if inner == "" {
		inner = `{"type":"server_error","code":null,"message":"error","param":null}`
	}
	b = append(b, inner...)
	return append(b, '}')
}

// close closes the client socket with code and a reason cut to 120 bytes.
func (c *conn) close(code websocket.StatusCode, reason string) {
	c.ws.Close(code, closeReason(reason))
	c.cancel()
}

// closeReason cuts a close reason to 120 bytes without splitting a UTF-8
// sequence (the protocol allows 123).
func closeReason(s string) string {
	const max = 120
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && s[cut]&0xC0 == 0x80 {
		cut--
	}
	return s[:cut]
}

// keepAlive pings the socket every PingInterval and closes it when a pong
// does not come back within PingTimeout.
func keepAlive(ctx context.Context, ws pinger, h *wsServer) {
	t := time.NewTicker(h.pingInterval())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			pctx, cancel := context.WithTimeout(ctx, h.pingTimeout())
			err := ws.Ping(pctx)
			cancel()
			if err != nil && ctx.Err() == nil {
				ws.CloseNow()
				return
			}
		}
	}
}

// pinger is a socket keepAlive can ping: the client's and the upstream's.
type pinger interface {
	Ping(context.Context) error
	CloseNow() error
}

var errUpstreamClosed = errors.New("upstream websocket closed")
