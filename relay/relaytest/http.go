package relaytest

import (
	"context"
	"net"
	"net/http"
	"net/textproto"
	"strconv"
	"time"
)

// exchange is one HTTP request being answered.
type exchange struct {
	u      *Upstream
	acct   *account // nil outside the responses path
	step   Step
	w      http.ResponseWriter
	r      *http.Request
	start  time.Time
	served Served
	done   bool
}

// finish records the answer once; later calls do nothing.
func (x *exchange) finish(status string) {
	if x.done {
		return
	}
	x.done = true
	x.served.Status = status
	x.u.record(x.acct, x.served)
}

// abort records the request as aborted and cuts the connection without a
// clean end. reset asks for a TCP reset instead of a normal close.
func (x *exchange) abort(reset bool) {
	x.finish(statusAborted)
	rc := http.NewResponseController(x.w)
	conn, _, err := rc.Hijack()
	if err != nil {
		// HTTP/2 or a recorder: the documented way to abort a response.
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok && reset {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

// Header values shared by every response; net/http only reads them.
var (
	hdrJSON          = []string{"application/json"}
	hdrEventStream   = []string{"text/event-stream; charset=utf-8"}
	hdrNoCache       = []string{"no-cache"}
	hdrVersion       = []string{"2020-10-01"}
	hdrLimitRequests = []string{"10000"}
	hdrLimitTokens   = []string{"30000000"}
	hdrRemainingReq  = []string{"9999"}
	hdrRemainingTok  = []string{"29999000"}
	hdrResetRequests = []string{"6ms"}
	hdrResetTokens   = []string{"2ms"}
	hdrZero          = []string{"0"}
	hdrOneSecond     = []string{"1s"}
)

// header sets the response headers of a real upstream, then the step's.
func (x *exchange) header(contentType []string, status int) {
	h := x.w.Header()
	id := newID("req_", 32)
	x.served.RequestID = id
	x.served.HTTPStatus = status
	h["Content-Type"] = contentType
	h["X-Request-Id"] = []string{id}
	h["Openai-Processing-Ms"] = []string{strconv.FormatInt(time.Since(x.start).Milliseconds(), 10)}
	h["Openai-Version"] = hdrVersion
	h["X-Ratelimit-Limit-Requests"] = hdrLimitRequests
	h["X-Ratelimit-Limit-Tokens"] = hdrLimitTokens
	if status == http.StatusTooManyRequests {
		h["X-Ratelimit-Remaining-Requests"] = hdrZero
		h["X-Ratelimit-Reset-Requests"] = hdrOneSecond
	} else {
		h["X-Ratelimit-Remaining-Requests"] = hdrRemainingReq
		h["X-Ratelimit-Reset-Requests"] = hdrResetRequests
	}
	h["X-Ratelimit-Remaining-Tokens"] = hdrRemainingTok
	h["X-Ratelimit-Reset-Tokens"] = hdrResetTokens
	for k, v := range x.step.Header {
		k = textproto.CanonicalMIMEHeaderKey(k)
		if len(v) == 0 {
			delete(h, k)
		} else {
			h[k] = append([]string(nil), v...)
		}
	}
}

// writeError answers with e.
func (x *exchange) writeError(e *apiError) {
	body := e.appendJSON(make([]byte, 0, 256))
	x.header(hdrJSON, e.status)
	x.served.Code = e.code
	x.w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	x.finish(statusError)
	x.w.WriteHeader(e.status)
	_, _ = x.w.Write(body)
}

// scripted answers with Step.Status and Step.Body.
func (x *exchange) scripted() {
	s := &x.step
	if s.Body == "" && s.Status >= 400 {
		x.writeError(errorForStatus(s.Status))
		return
	}
	x.header(hdrJSON, s.Status)
	x.w.Header().Set("Content-Length", strconv.Itoa(len(s.Body)))
	status := statusCompleted
	if s.Status >= 400 {
		status = statusError
	}
	x.finish(status)
	x.w.WriteHeader(s.Status)
	_, _ = x.w.Write([]byte(s.Body))
}

// json answers a stream:false request with the whole response object.
func (x *exchange) json(t *turn) {
	body := t.appendResponse(make([]byte, 0, 1024+2*len(t.out)), t.final, !t.early)
	var use Usage
	if !t.early {
		use = t.usage
	}
	x.writeTimed(http.StatusOK, append(body, '\n'), t.final, t.failCode, use)
}

// writeTimed answers a generated JSON body, recorded with status, code and
// usage, after the step's FirstTokenDelay; Hold and Cut at After > 0 act
// after half of it.
func (x *exchange) writeTimed(code int, body []byte, status, errCode string, use Usage) {
	ctx := x.r.Context()
	s := &x.step
	if s.FirstTokenDelay > 0 && !x.u.wait(ctx, nil, s.FirstTokenDelay) {
		x.abort(false)
		return
	}
	x.header(hdrJSON, code)
	x.w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	x.served.Code, x.served.Usage = errCode, use
	if s.After > 0 && (s.Hold != nil || s.Cut) {
		half := len(body) / 2
		x.w.WriteHeader(code)
		_, _ = x.w.Write(body[:half])
		_ = http.NewResponseController(x.w).Flush()
		if (s.Hold != nil && !x.u.wait(ctx, s.Hold, 0)) || s.Cut {
			x.served.Code, x.served.Usage = "", Usage{}
			x.abort(false)
			return
		}
		x.finish(status)
		_, _ = x.w.Write(body[half:])
		return
	}
	x.finish(status)
	x.w.WriteHeader(code)
	_, _ = x.w.Write(body)
}

// stream answers a stream:true request with SSE events.
func (x *exchange) stream(t *turn) {
	x.header(hdrEventStream, http.StatusOK)
	x.w.Header()["Cache-Control"] = hdrNoCache
	x.w.WriteHeader(http.StatusOK)
	s := newSSESink(x.w, t)
	cut := x.u.play(x.r.Context(), t, s, func(n int) {
		x.served.Events = n
		x.served.Usage = t.servedUsage(n)
		status := t.servedStatus(n)
		if status == statusFailed || status == statusError {
			x.served.Code = t.failCode
		}
		x.finish(status)
	})
	if cut {
		x.abort(false)
	}
}

// eventSink is where a turn's events go: an SSE body, or a WebSocket.
type eventSink interface {
	writeEvent(t *turn, e planned, seq int) error
}

// play writes t's events to s and applies the step's timing and cut
// faults. done is called once with the number of events written: before the
// last write of a complete stream, otherwise when the stream stops. play
// reports whether the caller must cut the connection.
func (u *Upstream) play(ctx context.Context, t *turn, s eventSink, done func(n int)) (cut bool) {
	st := t.step
	// at is where the step holds or cuts; -1: nowhere.
	at := -1
	if st.After > 0 && (st.Hold != nil || st.Cut) {
		at = min(st.After, len(t.plan))
	}
	stopAt := func(i int) bool {
		if i != at {
			return false
		}
		if (st.Hold != nil && !u.wait(ctx, st.Hold, 0)) || st.Cut {
			done(i)
			return true
		}
		return false
	}
	for i := range t.plan {
		if stopAt(i) {
			return true
		}
		if i == t.firstOut && st.FirstTokenDelay > 0 && !u.wait(ctx, nil, st.FirstTokenDelay) {
			done(i)
			return true
		}
		if i > t.firstOut && st.EventInterval > 0 && !u.wait(ctx, nil, st.EventInterval) {
			done(i)
			return true
		}
		if i == len(t.plan)-1 && at != len(t.plan) {
			done(len(t.plan))
		}
		if err := s.writeEvent(t, t.plan[i], i); err != nil {
			done(i)
			return true
		}
	}
	if stopAt(len(t.plan)) {
		return true
	}
	done(len(t.plan))
	return false
}

// newSSESink returns a sink writing t's events to w with t's framing.
func newSSESink(w http.ResponseWriter, t *turn) *sseSink {
	s := &sseSink{w: w, rc: http.NewResponseController(w), nl: "\n",
		multi: t.ev.multi, comments: t.ev.comments}
	if t.ev.crlf {
		s.nl = "\r\n"
	}
	return s
}

// sseSink writes events as SSE frames, flushing each one.
type sseSink struct {
	w        http.ResponseWriter
	rc       *http.ResponseController
	buf      []byte
	scratch  []byte
	nl       string
	multi    bool
	comments bool
}

func (s *sseSink) writeEvent(t *turn, e planned, seq int) error {
	b := s.buf[:0]
	if s.comments {
		b = append(b, ": ping"...)
		b = append(b, s.nl...)
		b = append(b, s.nl...)
	}
	b = append(b, "event: "...)
	b = append(b, eventTypes[e.kind]...)
	b = append(b, s.nl...)
	b = append(b, "data: "...)
	start := len(b)
	b = t.appendEvent(b, e, seq)
	return s.endData(b, start, s.multi)
}

// endData ends the data of an event appended to b from start (a JSON
// object), writes the event and flushes it. With multi the object goes on
// three data lines ("{" / members / "}"): the joined data is the same JSON
// with two newlines between tokens.
func (s *sseSink) endData(b []byte, start int, multi bool) error {
	if multi {
		s.scratch = append(s.scratch[:0], b[start+1:len(b)-1]...)
		b = append(b[:start+1], s.nl...)
		b = append(b, "data: "...)
		b = append(b, s.scratch...)
		b = append(b, s.nl...)
		b = append(b, "data: }"...)
	}
	b = append(b, s.nl...)
	b = append(b, s.nl...)
	s.buf = b
	if _, err := s.w.Write(b); err != nil {
		return err
	}
	return s.rc.Flush()
}
