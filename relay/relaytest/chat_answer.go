package relaytest

import (
	"net/http"
	"unicode/utf8"
)

// A chat completion is decided by newTurn, as a Responses create would be,
// then written in the Chat Completions shapes: the answer, its pieces and
// its usage are the same.

const (
	chatReasoningPrefix = "Thinking about "
	finishStop          = "stop"
	finishLength        = "length"
	finishToolCalls     = "tool_calls"
	finishContentFilter = "content_filter"
)

// chatKind is the kind of one data: line of a chat stream.
type chatKind uint8

const (
	ckRole chatKind = iota
	ckReasoning
	ckToolStart
	ckArgs
	ckContent
	ckFinish
	ckUsage
	ckError
	ckDone
)

// chatTurn is one chat completion being produced.
type chatTurn struct {
	t       *turn // the answer, its pieces, usage and pacing
	req     *chatRequest
	id      string // chatcmpl-...
	kept    int    // pieces of t.out sent; fewer than all when cut by length
	reason  string // reasoning_content; "" for none
	rcuts   []int  // byte offsets of its pieces
	finish  string
	usage   Usage
	errCode string // in-band error; "" for none
	noEnd   bool   // the stream ends after the output, without finish_reason
	plan    []chatLine
}

// chatLine is one planned data: line; i is the piece index.
type chatLine struct {
	kind chatKind
	i    int
}

func newChatTurn(c *chatRequest, s *Step, created int64, a *account) *chatTurn {
	t := newTurn(&c.request, s, nil, created, a)
	n := len(t.cuts) - 1
	ct := &chatTurn{t: t, req: c, id: newID("chatcmpl-", 29), kept: n, usage: t.usage, finish: finishStop}
	if c.jsonOut && !t.fc {
		t.out = string(appendString([]byte(`{"echo":`), t.out)) + "}"
		t.cuts = splitRunes(t.out, n)
	}
	var rTokens int64
	if c.hasReasoning {
		ct.reason = chatReasoningPrefix + c.lastUserText
		ct.rcuts = splitRunes(ct.reason, min(n, utf8.RuneCountInString(ct.reason)))
		rTokens = reasoningTokens
	}
	if t.fc {
		ct.finish = finishToolCalls
	}
	end, code := s.end()
	switch end {
	case endRefused, endError, endFailed:
		ct.errCode = code
	case endNone:
		ct.noEnd = true
	case endIncomplete:
		ct.finish = finishLength
		if code == finishContentFilter {
			ct.finish = finishContentFilter
		}
	}
	// Reasoning spends the budget first, then each piece is a token.
	if m := c.maxTokens; m > 0 && m < int64(n)+rTokens {
		r := min(rTokens, m)
		ct.kept, ct.finish = int(m-r), finishLength
		if s.Usage == nil {
			ct.usage.Reasoning, ct.usage.Output = r, m
		}
	}
	ct.planLines(end == endRefused || end == endError)
	// play reads only the length of the plan and where output starts.
	t.plan = make([]planned, len(ct.plan))
	t.firstOut = min(1, len(ct.plan)-1)
	return ct
}

func (ct *chatTurn) planLines(early bool) {
	if early {
		ct.plan = []chatLine{{kind: ckError}}
		return
	}
	p := make([]chatLine, 0, 8+len(ct.rcuts)+ct.kept)
	p = append(p, chatLine{kind: ckRole})
	for i := range len(ct.rcuts) - 1 {
		p = append(p, chatLine{kind: ckReasoning, i: i})
	}
	piece := ckContent
	if ct.t.fc {
		p = append(p, chatLine{kind: ckToolStart})
		piece = ckArgs
	}
	for i := range ct.kept {
		p = append(p, chatLine{kind: piece, i: i})
	}
	switch {
	case ct.errCode != "":
		p = append(p, chatLine{kind: ckError})
	case ct.noEnd:
	default:
		p = append(p, chatLine{kind: ckFinish})
		if ct.sendsUsage() {
			p = append(p, chatLine{kind: ckUsage})
		}
		p = append(p, chatLine{kind: ckDone})
	}
	ct.plan = p
}

// sendsUsage reports whether a stream ends with a usage chunk: asked for,
// and not left out by Step.Events "nousage".
func (ct *chatTurn) sendsUsage() bool { return ct.req.includeUsage && !ct.t.ev.noUsage }

// status is the Served.Status of a stream that wrote n lines, or of a JSON
// answer (n = len(plan)).
func (ct *chatTurn) status(n int) string {
	switch {
	case n < len(ct.plan) || ct.noEnd:
		return statusAborted
	case ct.errCode != "":
		return statusError
	case ct.finish == finishLength || ct.finish == finishContentFilter:
		return statusIncomplete
	}
	return statusCompleted
}

// chat answers POST /chat/completions.
func (x *exchange) chat(body []byte) {
	body, ok := x.decoded(body)
	if !ok {
		return
	}
	c, e := parseChat(body)
	if e != nil {
		x.writeError(e)
		return
	}
	if !c.stream && x.u.refusesJSON(x.acct) {
		x.writeError(errStreamOnly)
		return
	}
	ct := newChatTurn(c, &x.step, x.start.Unix(), x.acct)
	x.served.ResponseID = ct.id
	if !c.stream {
		x.chatJSON(ct)
		return
	}
	x.header(hdrEventStream, http.StatusOK)
	x.w.Header()["Cache-Control"] = hdrNoCache
	x.w.WriteHeader(http.StatusOK)
	s := &chatSink{sseSink: newSSESink(x.w, ct.t), ct: ct}
	cut := x.u.play(x.r.Context(), ct.t, s, func(n int) {
		x.served.Events = n
		status := ct.status(n)
		if status == statusError {
			x.served.Code = ct.errCode
		}
		if status != statusAborted && status != statusError && ct.sendsUsage() {
			x.served.Usage = ct.usage
		}
		x.finish(status)
	})
	if cut {
		x.abort(false)
	}
}

// chatJSON answers a stream:false chat completion: the completion object,
// or for an in-band error the HTTP error a real upstream sends.
func (x *exchange) chatJSON(ct *chatTurn) {
	ct.noEnd = false // a JSON body always ends
	if ct.errCode != "" {
		e := chatFailure(ct.errCode)
		x.writeTimed(e.status, e.appendJSON(make([]byte, 0, 256)), statusError, ct.errCode, Usage{})
		return
	}
	t := ct.t
	b := make([]byte, 0, 1024+2*len(t.out)+len(ct.reason))
	b = ct.appendHead(b, "chat.completion")
	b = append(b, `,"choices":[{"index":0,"message":{"role":"assistant","content":`...)
	if t.fc {
		b = append(b, "null"...)
	} else {
		b = appendString(b, t.out[:t.cuts[ct.kept]])
	}
	b = append(b, `,"refusal":null,"annotations":[]`...)
	if ct.reason != "" {
		b = append(b, `,"reasoning_content":`...)
		b = appendString(b, ct.reason)
	}
	if t.fc {
		b = append(b, `,"tool_calls":[{"id":`...)
		b = appendString(b, t.callID)
		b = append(b, `,"type":"function","function":{"name":`...)
		b = appendString(b, t.fnName)
		b = append(b, `,"arguments":`...)
		b = appendString(b, t.out[:t.cuts[ct.kept]])
		b = append(b, `}}]`...)
	}
	b = append(b, `},"logprobs":null,"finish_reason":"`...)
	b = append(b, ct.finish...)
	b = append(b, `"}],"usage":`...)
	b = appendChatUsage(b, ct.usage)
	b = append(b, "}\n"...)
	x.writeTimed(http.StatusOK, b, ct.status(len(ct.plan)), "", ct.usage)
}

// chatFailure is the HTTP error a stream:false request gets where a stream
// would carry an in-band error with code.
func chatFailure(code string) *apiError {
	e := &apiError{status: http.StatusInternalServerError, typ: failureType(code), code: code, msg: failureMessage(code)}
	switch {
	case code == "server_is_overloaded":
		e.status = http.StatusServiceUnavailable
	case e.typ == typeRateLimit:
		e.status = http.StatusTooManyRequests
	case e.typ == typeInvalidRequest:
		e.status = http.StatusBadRequest
	}
	return e
}

// appendHead appends the members every completion object and chunk starts
// with, from "{".
func (ct *chatTurn) appendHead(b []byte, object string) []byte {
	b = append(b, `{"id":"`...)
	b = append(b, ct.id...)
	b = append(b, `","object":"`...)
	b = append(b, object...)
	b = append(b, `","created":`...)
	b = appendInt(b, ct.t.createdAt)
	b = append(b, `,"model":`...)
	b = appendString(b, ct.req.model)
	b = append(b, `,"service_tier":`...)
	b = appendString(b, ct.req.serviceTier)
	return append(b, `,"system_fingerprint":null`...)
}

func appendChatUsage(b []byte, u Usage) []byte {
	b = append(b, `{"prompt_tokens":`...)
	b = appendInt(b, u.Input)
	b = append(b, `,"completion_tokens":`...)
	b = appendInt(b, u.Output)
	b = append(b, `,"total_tokens":`...)
	b = appendInt(b, u.Input+u.Output)
	b = append(b, `,"prompt_tokens_details":{"cached_tokens":`...)
	b = appendInt(b, u.Cached)
	b = append(b, `,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":`...)
	b = appendInt(b, u.Reasoning)
	return append(b, `,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}`...)
}

// appendChunk appends the JSON of data: line l, or "[DONE]".
func (ct *chatTurn) appendChunk(b []byte, l chatLine) []byte {
	t := ct.t
	switch l.kind {
	case ckDone:
		return append(b, "[DONE]"...)
	case ckError:
		e := chatFailure(ct.errCode)
		b = e.appendJSON(b)
		return b[:len(b)-1] // no newline inside a data: line
	}
	b = ct.appendHead(b, "chat.completion.chunk")
	if l.kind == ckUsage {
		b = append(b, `,"choices":[],"usage":`...)
		b = appendChatUsage(b, ct.usage)
		return append(b, '}')
	}
	b = append(b, `,"choices":[{"index":0,"delta":{`...)
	piece := true
	switch l.kind {
	case ckRole:
		piece = false
		b = append(b, `"role":"assistant","content":`...)
		if t.fc {
			b = append(b, "null"...)
		} else {
			b = append(b, `""`...)
		}
		b = append(b, `,"refusal":null`...)
	case ckReasoning:
		b = append(b, `"reasoning_content":`...)
		b = appendString(b, ct.reason[ct.rcuts[l.i]:ct.rcuts[l.i+1]])
	case ckContent:
		b = append(b, `"content":`...)
		b = appendString(b, t.out[t.cuts[l.i]:t.cuts[l.i+1]])
	case ckToolStart:
		b = append(b, `"tool_calls":[{"index":0,"id":`...)
		b = appendString(b, t.callID)
		b = append(b, `,"type":"function","function":{"name":`...)
		b = appendString(b, t.fnName)
		b = append(b, `,"arguments":""}}]`...)
	case ckArgs:
		b = append(b, `"tool_calls":[{"index":0,"function":{"arguments":`...)
		b = appendString(b, t.out[t.cuts[l.i]:t.cuts[l.i+1]])
		b = append(b, `}}]`...)
	case ckFinish:
		piece = false
	}
	b = append(b, `},"logprobs":null,"finish_reason":`...)
	if l.kind == ckFinish {
		b = appendString(b, ct.finish)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, "}]"...)
	if ct.req.includeUsage {
		b = append(b, `,"usage":null`...)
	}
	if piece && !ct.req.noObfuscate {
		b = append(b, `,"obfuscation":`...)
		b = t.appendPad(b)
	}
	return append(b, '}')
}

// chatSink writes a chat completion's lines as SSE data: lines, with the
// step's framing.
type chatSink struct {
	*sseSink
	ct *chatTurn
}

func (s *chatSink) writeEvent(_ *turn, _ planned, seq int) error {
	l := s.ct.plan[seq]
	b := s.buf[:0]
	if s.comments {
		b = append(b, ": ping"...)
		b = append(b, s.nl...)
		b = append(b, s.nl...)
	}
	b = append(b, "data: "...)
	start := len(b)
	b = s.ct.appendChunk(b, l)
	return s.endData(b, start, s.multi && l.kind != ckDone)
}
