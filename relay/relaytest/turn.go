package relaytest

import (
	"github.com/relaykit/responsesrelay/internal/stamp"
	"strings"
	"time"
	"unicode/utf8"
)

// turn is one response being produced. It is transport-neutral: the SSE
// writer and the JSON writer both read events from it, and a WebSocket
// writer can do the same.
type turn struct {
	req       *request
	step      *Step  // &stepv
	stepv     Step   // a copy: a stored turn must not keep its request's exchange
	id        string // resp_...
	itemID    string // msg_... or fc_...
	callID    string
	fnName    string
	createdAt int64
	fc        bool   // output is a function call
	lead      byte   // blobReasoning or blobCompaction: an item before the main one; 0: none
	leadID    string // rs_... or cmp_...
	leadBlob  string // its encrypted_content
	at        int    // output_index of the main item
	out       string // text, or function call arguments
	cuts      []int  // byte offsets of the deltas in out
	usage     Usage
	pad       string // obfuscation value of delta events
	plan      []planned
	firstOut  int    // index in plan of the first output event
	final     string // status of the finished response: completed, incomplete, failed
	failCode  string // error.code when final is failed
	early     bool   // failed before any output
	errEvent  bool   // ends with an error event instead of a terminal event
	noEnd     bool   // ends without a terminal event
	reason    string // incomplete_details.reason
	ev        eventOpts
	tail      []byte // constant members of the response object
}

type evKind uint8

const (
	evCreated evKind = iota
	evInProgress
	evItemAdded
	evPartAdded
	evTextDelta
	evTextDone
	evPartDone
	evArgsDelta
	evArgsDone
	evItemDone
	evCompleted
	evIncomplete
	evFailed
	evError
	evLeadAdded
	evLeadDone
)

var eventTypes = [...]string{
	evCreated:    "response.created",
	evInProgress: "response.in_progress",
	evItemAdded:  "response.output_item.added",
	evPartAdded:  "response.content_part.added",
	evTextDelta:  "response.output_text.delta",
	evTextDone:   "response.output_text.done",
	evPartDone:   "response.content_part.done",
	evArgsDelta:  "response.function_call_arguments.delta",
	evArgsDone:   "response.function_call_arguments.done",
	evItemDone:   "response.output_item.done",
	evCompleted:  "response.completed",
	evIncomplete: "response.incomplete",
	evFailed:     "response.failed",
	evError:      "error",
	evLeadAdded:  "response.output_item.added",
	evLeadDone:   "response.output_item.done",
}

// planned is one event of a turn; i is the delta index for delta events.
type planned struct {
	kind evKind
	i    int
}

const (
	defaultDeltas     = 5
	defaultPadding    = 10
	reasoningTokens   = 16
	baseInputTokens   = 10
	paddingAlphabet   = "aZ3kQ9mX7pL2vB8nR4tY6wC1"
	defaultToolName   = "tool"
	statusCompleted   = "completed"
	statusIncomplete  = "incomplete"
	statusFailed      = "failed"
	statusAborted     = "aborted"
	statusError       = "error"
	statusInProgress  = "in_progress"
	statusQueued      = "queued"
	statusCancelled   = "cancelled"
	outputEchoPrefix  = "Echo: "
	outputToolPrefix  = "Function output received: "
	outputEmptyPrompt = "Hello!"
)

// newTurn decides everything about a response up front, so that writing
// events is only appending bytes. prev is the previous response when the
// request chains, else nil; a is the account answering.
func newTurn(q *request, s *Step, prev *stored, createdAt int64, a *account) *turn {
	t := &turn{req: q, stepv: *s, id: newID("resp_", 32), createdAt: createdAt, final: statusCompleted,
		ev: s.eventOpts()}
	t.step = &t.stepv
	n := s.Deltas
	if n <= 0 {
		n = defaultDeltas
	}
	switch {
	case q.warmup:
		n = 0
	case q.compact:
	case s.FunctionCall != "":
		t.fc = true
		t.fnName, t.out, t.callID = s.functionCall()
	case q.fnName != "" && q.lastKind == itemUserMessage:
		t.fc = true
	}
	switch {
	case q.warmup, q.compact:
	case t.fc:
		if t.fnName == "" {
			t.fnName = q.fnName
		}
		if t.fnName == "" {
			t.fnName = defaultToolName
		}
		if t.out == "" {
			t.out = string(appendString(append([]byte(nil), `{"input":`...), q.lastUserText)) + "}"
		}
		if t.callID == "" {
			t.callID = newID("call_", 24)
		}
		t.itemID = newID("fc_", 32)
		n = min(n, utf8.RuneCountInString(t.out))
	default:
		switch {
		case q.lastKind == itemFunctionOutput:
			t.out = outputToolPrefix + q.lastOutput
		case q.lastUserText != "":
			t.out = outputEchoPrefix + q.lastUserText
		default:
			t.out = outputEmptyPrompt
		}
		if c := utf8.RuneCountInString(t.out); c < n {
			t.out += strings.Repeat(".", n-c)
		}
		t.itemID = newID("msg_", 32)
	}
	if !q.compact {
		t.cuts = splitRunes(t.out, n)
	}
	t.addLead(a)

	switch {
	case s.EventPadding < 0:
	case s.EventPadding == 0:
		t.pad = paddingAlphabet[:defaultPadding]
	default:
		t.pad = padding(s.EventPadding)
	}

	if s.Usage != nil {
		t.usage = *s.Usage
	} else {
		t.usage.Input, t.usage.Cached = inputUsage(q, prev)
		if (q.hasReasoning && !q.warmup) || t.lead == blobReasoning {
			t.usage.Reasoning = reasoningTokens
		}
		t.usage.Output = int64(n) + t.usage.Reasoning
	}

	t.planEvents(n)
	t.tail = t.appendTail(make([]byte, 0, 512))
	return t
}

// inputUsage is the input and cached token counts of q, as documented on
// Usage.
func inputUsage(q *request, prev *stored) (input, cached int64) {
	input = baseInputTokens + q.words
	if prev != nil {
		input += prev.usage.Input + prev.usage.Output
		cached = prev.usage.Input
	}
	return input, cached
}

func (t *turn) planEvents(n int) {
	s := t.step
	t.plan = make([]planned, 0, n+10)
	t.plan = append(t.plan, planned{kind: evCreated})
	if !t.req.warmup {
		t.plan = append(t.plan, planned{kind: evInProgress})
	}
	t.firstOut = len(t.plan)
	end, code := s.end()
	if end == endRefused || end == endError {
		t.final, t.early, t.failCode = statusFailed, true, code
		if end == endError {
			t.errEvent = true
			t.plan = append(t.plan, planned{kind: evError})
		} else {
			t.plan = append(t.plan, planned{kind: evFailed})
		}
		return
	}
	if t.lead != 0 {
		t.plan = append(t.plan, planned{kind: evLeadAdded}, planned{kind: evLeadDone})
	}
	switch {
	case t.req.warmup, t.req.compact:
	case t.fc:
		t.plan = append(t.plan, planned{kind: evItemAdded})
		for i := range n {
			t.plan = append(t.plan, planned{kind: evArgsDelta, i: i})
		}
		t.plan = append(t.plan, planned{kind: evArgsDone}, planned{kind: evItemDone})
	default:
		t.plan = append(t.plan, planned{kind: evItemAdded}, planned{kind: evPartAdded})
		for i := range n {
			t.plan = append(t.plan, planned{kind: evTextDelta, i: i})
		}
		t.plan = append(t.plan, planned{kind: evTextDone}, planned{kind: evPartDone}, planned{kind: evItemDone})
	}
	switch end {
	case endNone:
		t.noEnd = true
	case endFailed:
		t.final, t.failCode = statusFailed, code
		t.plan = append(t.plan, planned{kind: evFailed})
	case endIncomplete:
		t.final, t.reason = statusIncomplete, code
		t.plan = append(t.plan, planned{kind: evIncomplete})
	default:
		t.plan = append(t.plan, planned{kind: evCompleted})
	}
}

// servedStatus is the Served.Status of a stream cut after n events.
func (t *turn) servedStatus(n int) string {
	if n < len(t.plan) || t.noEnd {
		return statusAborted
	}
	if t.errEvent {
		return statusError
	}
	return t.final
}

// servedUsage is the usage that went out in the first n events.
func (t *turn) servedUsage(n int) Usage {
	if n < len(t.plan) || t.noEnd || t.early {
		return Usage{}
	}
	return t.usage
}

func padding(n int) string {
	var sb strings.Builder
	sb.Grow(n)
	for sb.Len() < n {
		sb.WriteString(paddingAlphabet[:min(len(paddingAlphabet), n-sb.Len())])
	}
	return sb.String()
}

// appendEvent appends the JSON of event e with the given sequence number.
// appendPad appends a delta's obfuscation string: the padding, or the
// time of writing with the "stamp" option.
func (t *turn) appendPad(b []byte) []byte {
	if t.ev.stamp {
		return stamp.Append(b, time.Now())
	}
	return appendString(b, t.pad)
}

func (t *turn) appendEvent(b []byte, e planned, seq int) []byte {
	b = append(b, `{"type":"`...)
	b = append(b, eventTypes[e.kind]...)
	b = append(b, `","sequence_number":`...)
	b = appendInt(b, int64(seq))
	switch e.kind {
	case evCreated, evInProgress:
		b = append(b, `,"response":`...)
		if e.kind == evCreated && t.req.background {
			b = t.appendObject(b, statusQueued, false, nil)
		} else {
			b = t.appendResponse(b, statusInProgress, false)
		}
	case evCompleted, evIncomplete, evFailed:
		b = append(b, `,"response":`...)
		b = t.appendResponse(b, t.final, !t.early)
	case evError:
		b = append(b, `,"error":{"type":`...)
		b = appendString(b, failureType(t.failCode))
		b = append(b, `,"code":`...)
		b = appendString(b, t.failCode)
		b = append(b, `,"message":`...)
		b = appendString(b, failureMessage(t.failCode))
		b = append(b, `,"param":null}`...)
	case evLeadAdded, evLeadDone:
		b = append(b, `,"output_index":0,"item":`...)
		b = t.appendLead(b)
	case evItemAdded:
		b = append(b, `,"output_index":`...)
		b = appendInt(b, int64(t.at))
		b = append(b, `,"item":`...)
		b = t.appendItem(b, false)
	case evItemDone:
		b = append(b, `,"output_index":`...)
		b = appendInt(b, int64(t.at))
		b = append(b, `,"item":`...)
		b = t.appendItem(b, true)
	case evPartAdded, evPartDone:
		b = t.appendItemRef(b, true)
		b = append(b, `,"part":`...)
		if e.kind == evPartAdded {
			b = appendTextPart(b, "")
		} else {
			b = appendTextPart(b, t.out)
		}
	case evTextDelta:
		b = t.appendItemRef(b, true)
		b = append(b, `,"delta":`...)
		b = appendString(b, t.out[t.cuts[e.i]:t.cuts[e.i+1]])
		b = append(b, `,"logprobs":[],"obfuscation":`...)
		b = t.appendPad(b)
	case evTextDone:
		b = t.appendItemRef(b, true)
		b = append(b, `,"text":`...)
		b = appendString(b, t.out)
		b = append(b, `,"logprobs":[]`...)
	case evArgsDelta:
		b = t.appendItemRef(b, false)
		b = append(b, `,"delta":`...)
		b = appendString(b, t.out[t.cuts[e.i]:t.cuts[e.i+1]])
		b = append(b, `,"obfuscation":`...)
		b = t.appendPad(b)
	case evArgsDone:
		b = t.appendItemRef(b, false)
		b = append(b, `,"name":`...)
		b = appendString(b, t.fnName)
		b = append(b, `,"arguments":`...)
		b = appendString(b, t.out)
	}
	return append(b, '}')
}

func (t *turn) appendItemRef(b []byte, content bool) []byte {
	b = append(b, `,"item_id":"`...)
	b = append(b, t.itemID...)
	b = append(b, `","output_index":`...)
	b = appendInt(b, int64(t.at))
	if content {
		b = append(b, `,"content_index":0`...)
	}
	return b
}

func appendTextPart(b []byte, text string) []byte {
	b = append(b, `{"type":"output_text","annotations":[],"logprobs":[],"text":`...)
	b = appendString(b, text)
	return append(b, '}')
}

// appendItem appends the output item, in progress or finished.
func (t *turn) appendItem(b []byte, done bool) []byte {
	status := statusInProgress
	if done {
		status = statusCompleted
		if t.final == statusIncomplete {
			status = statusIncomplete
		}
	}
	b = append(b, `{"id":"`...)
	b = append(b, t.itemID...)
	if t.fc {
		b = append(b, `","type":"function_call","status":"`...)
		b = append(b, status...)
		b = append(b, `","arguments":`...)
		if done {
			b = appendString(b, t.out)
		} else {
			b = append(b, `""`...)
		}
		b = append(b, `,"call_id":"`...)
		b = append(b, t.callID...)
		b = append(b, `","name":`...)
		b = appendString(b, t.fnName)
		return append(b, '}')
	}
	b = append(b, `","type":"message","status":"`...)
	b = append(b, status...)
	b = append(b, `","content":[`...)
	if done {
		b = appendTextPart(b, t.out)
	}
	return append(b, `],"role":"assistant"}`...)
}

// appendResponse appends the response object in the given state.
func (t *turn) appendResponse(b []byte, status string, output bool) []byte {
	var u *Usage
	if status != statusInProgress && !t.early {
		u = &t.usage
	}
	return t.appendObject(b, status, output, u)
}

// appendObject appends the response object with the given status, output
// (or none) and usage (null when nil).
func (t *turn) appendObject(b []byte, status string, output bool, usage *Usage) []byte {
	b = append(b, `{"id":"`...)
	b = append(b, t.id...)
	b = append(b, `","object":"response","created_at":`...)
	b = appendInt(b, t.createdAt)
	b = append(b, `,"status":"`...)
	b = append(b, status...)
	b = append(b, `","error":`...)
	if status == statusFailed {
		b = append(b, `{"code":`...)
		b = appendString(b, t.failCode)
		b = append(b, `,"message":`...)
		b = appendString(b, failureMessage(t.failCode))
		b = append(b, '}')
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"incomplete_details":`...)
	if status == statusIncomplete {
		b = append(b, `{"reason":`...)
		b = appendString(b, t.reason)
		b = append(b, '}')
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"output":[`...)
	if output && !t.req.warmup {
		if t.lead != 0 {
			b = t.appendLead(b)
		}
		if !t.req.compact {
			if t.lead != 0 {
				b = append(b, ',')
			}
			b = t.appendItem(b, true)
		}
	}
	b = append(b, `],"usage":`...)
	if usage == nil {
		b = append(b, "null"...)
	} else {
		b = appendUsage(b, *usage)
	}
	b = append(b, t.tail...)
	return append(b, '}')
}
