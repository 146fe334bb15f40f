package relaytest

import (
	"context"
	"net/http"
	"slices"
	"strings"

	"github.com/coder/websocket"
	"github.com/tidwall/gjson"
)

// runTurn plays one response.create as ServeHTTP plays a POST.
func (w *wsConn) runTurn(m wsTurn) {
	u, ctx := w.u, w.ctx
	x := w.exchange(w.acct, m.at, m.seq)
	x.step = m.step
	s := &x.step
	prevID := gjson.GetBytes(m.msg, "previous_response_id").String()
	defer w.end(x, prevID, nil, statusAborted) // for panics and early returns

	if s.After == 0 && s.Hold != nil && !u.wait(ctx, s.Hold, 0) {
		return
	}
	if s.After == 0 && s.Cut {
		w.end(x, prevID, nil, statusAborted)
		w.cut(true)
		return
	}
	if s.Status != 0 {
		w.scripted(x, prevID)
		return
	}
	q, e := parseRequest(m.msg)
	if e == nil {
		e = readGenerate(m.msg, q)
		q.background = false // HTTP only: the turn runs as usual
	}
	if e == nil {
		var prev *stored
		if prev, e = u.resolve(w.acct, q, w.cached()); e == nil {
			w.play(x, newTurn(q, s, prev, x.start.Unix(), w.acct), prev)
			return
		}
	}
	x.served.HTTPStatus, x.served.Code = e.status, e.code
	w.end(x, prevID, nil, statusError)
	w.write(appendErrorMessage(nil, e, nil))
}

// readGenerate reads the WebSocket-only generate flag.
func readGenerate(msg []byte, q *request) *apiError {
	g := gjson.GetBytes(msg, "generate")
	switch {
	case !g.Exists() || g.Type == gjson.Null:
	case !isBool(g):
		return invalidType("generate", "a boolean", g)
	default:
		q.warmup = g.Type == gjson.False
	}
	return nil
}

func (w *wsConn) play(x *exchange, t *turn, prev *stored) {
	st := newStored(t, prev)
	if t.req.store {
		w.u.save(w.acct, st)
	}
	x.served.ResponseID = t.id
	sink := &wsSink{c: w.c}
	cut := w.u.play(w.ctx, t, sink, func(n int) {
		x.served.Events = n
		x.served.Usage = t.servedUsage(n)
		status := t.servedStatus(n)
		var next *stored
		switch status {
		case statusCompleted, statusIncomplete:
			next = st
		case statusFailed, statusError:
			x.served.Code = t.failCode
		}
		w.end(x, t.req.prevID, next, status)
	})
	switch {
	case cut:
		w.cut(false)
	case t.noEnd:
		// The WebSocket counterpart of a clean EOF before the terminal event.
		_ = w.c.Close(websocket.StatusNormalClosure, "")
	}
}

// scripted answers a turn with Step.Status: Body as the message when set,
// else an error message for that status.
func (w *wsConn) scripted(x *exchange, prevID string) {
	s := &x.step
	var msg []byte
	switch {
	case s.Body != "":
		msg = []byte(s.Body)
	case s.Status >= 400:
		e := errorForStatus(s.Status)
		x.served.Code = e.code
		msg = appendErrorMessage(nil, e, s.Header)
	}
	status := statusCompleted
	if s.Status >= 400 {
		status = statusError
	}
	x.served.HTTPStatus = s.Status
	w.end(x, prevID, nil, status)
	if msg != nil {
		w.write(msg)
	}
}

// wsSink writes each event as one text message.
type wsSink struct {
	c   *websocket.Conn
	buf []byte
}

func (s *wsSink) writeEvent(t *turn, e planned, seq int) error {
	s.buf = t.appendEvent(s.buf[:0], e, seq)
	return s.c.Write(context.Background(), websocket.MessageText, s.buf)
}

// appendErrorMessage appends the error message of the WebSocket mode:
// {"type":"error","status":N,"error":{...}}, with a "headers" object (names
// in lower case, first values) when h has any, as Codex reads rate-limit
// headers from it.
func appendErrorMessage(b []byte, e *apiError, h http.Header) []byte {
	b = append(b, `{"type":"error","status":`...)
	b = appendInt(b, int64(e.status))
	b = append(b, `,"error":{"type":`...)
	b = appendString(b, e.typ)
	b = append(b, `,"code":`...)
	b = appendStringOrNull(b, e.code)
	b = append(b, `,"message":`...)
	b = appendString(b, e.msg)
	b = append(b, `,"param":`...)
	b = appendStringOrNull(b, e.param)
	b = append(b, '}')
	keys := make([]string, 0, len(h))
	for k, v := range h {
		if len(v) > 0 {
			keys = append(keys, k)
		}
	}
	if len(keys) > 0 {
		slices.Sort(keys)
		b = append(b, `,"headers":{`...)
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, strings.ToLower(k))
			b = append(b, ':')
			b = appendString(b, h[k][0])
		}
		b = append(b, '}')
	}
	return append(b, '}')
}
