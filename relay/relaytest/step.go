package relaytest

import (
	"net/http"
	"strconv"
	"time"

	"github.com/tidwall/gjson"
)

// Step scripts how the fake answers one request to an account.
//
// The zero Step is the normal, spec-faithful behaviour. Fields combine; they
// apply in this order:
//
//  1. Hold, ResetBeforeHeaders, Hang and Status act before authentication and
//     validation, like a failing proxy or an overloaded upstream would.
//  2. Otherwise the request is authenticated and validated as the real API
//     does, and a response is produced.
//  3. InBandFailed and ErrorEvent replace the output; FunctionCall, Deltas,
//     EventPadding and Usage shape it; Incomplete, FailAfterOutput and
//     NoTerminal choose how it ends; FirstTokenDelay, PauseAfterEvents,
//     ResetAfterEvents and IdleAfterEvents cut into it; CRLF, MultiLineData
//     and Comments change the SSE framing only.
//
// Header applies to every answer the step produces.
//
// On a WebSocket turn (a response.create message) the fields act on the
// turn, and the connection outlives it unless said otherwise:
//
//   - Hold delays the turn; Hang never answers it (until the connection
//     ends); ResetBeforeHeaders cuts the connection (TCP reset) before any
//     event.
//   - Status sends Body as one text message when Body is set, else an error
//     message {"type":"error","status":Status,"error":{...}} with the error
//     an HTTP answer would carry; Header, when set, becomes its "headers"
//     object (lower-case names, first values), where Codex reads rate-limit
//     headers. A Status below 400 without Body sends nothing.
//   - ResetAfterEvents and IdleAfterEvents cut or stall the connection after
//     that many event messages, and PauseAfterEvents pauses it; NoTerminal closes it with status 1000 after
//     the output, the counterpart of a clean EOF.
//   - CRLF, MultiLineData and Comments do not apply.
//
// A WebSocket upgrade request takes its Step from ScriptUpgrade; there, only
// Hold, ResetBeforeHeaders, Hang, Status, Body and Header act.
type Step struct {
	// Status, when non-zero, answers with this HTTP status instead of running
	// the request. Body is sent as is (Content-Type application/json unless
	// Header says otherwise); an empty Body with a status >= 400 is replaced
	// by an OpenAI-shaped error for that status (429 uses rate_limit_exceeded,
	// 5xx server_error, and so on). An empty Body with a lower status sends no
	// body.
	Status int
	// Header is added to the response headers, replacing the fake's defaults
	// of the same name. A key with an empty value slice removes that header.
	// nil adds nothing.
	Header http.Header
	// Body is the response body used with Status.
	Body string

	// ResetBeforeHeaders closes the connection (with a TCP reset where
	// possible) without answering: the client sees a transport error. Note
	// that net/http's Transport silently retries a replayable request (for
	// example a POST with an Idempotency-Key header) that failed so on a
	// reused connection; the retry takes the account's next step.
	ResetBeforeHeaders bool
	// Hang never answers. The handler returns when the request's context ends
	// or the Server closes; the connection is then closed without a response.
	Hang bool
	// Hold, when non-nil, delays the request until the channel is closed and
	// then goes on with the rest of the step. It lets a test keep requests in
	// flight for as long as it likes (to observe concurrency) without sleeps.
	// If the request's context ends or the Server closes first, the
	// connection is closed without a response.
	Hold <-chan struct{}

	// Deltas is the number of response.output_text.delta events (or
	// response.function_call_arguments.delta events, at most one per
	// character of the arguments). 0 means 5. The output text is padded with
	// '.' when it has fewer characters than Deltas.
	Deltas int
	// EventPadding is the length of the obfuscation string in every delta
	// event; use it to produce large events (any size works, including more
	// than 64 KiB). 0 means a short 10-byte string; a negative value sends an
	// empty string.
	EventPadding int
	// FirstTokenDelay waits this long after response.in_progress, before the
	// next event (before the response headers for stream:false). The
	// wait ends early, and the connection is closed, when the request's
	// context ends or the Server closes.
	FirstTokenDelay time.Duration
	// EventInterval waits this long before each event after the first
	// output event: a paced stream, as a model writes tokens. Like
	// FirstTokenDelay the wait ends early, and the connection is closed,
	// when the request's context ends or the Server closes.
	EventInterval time.Duration
	// StampEvents writes into each delta event's obfuscation string the
	// time the fake wrote it, in Unix nanoseconds (decimal), instead of
	// the padding, so that a client in the same process can tell how long
	// each event took to reach it (see ParseStamp).
	StampEvents bool

	// ResetAfterEvents > 0 writes that many events and then closes the
	// connection mid-body. With stream:false it sends the headers and half of
	// the JSON body instead. If the count covers the whole stream, every event
	// is written and the body is still cut before its clean end.
	ResetAfterEvents int
	// IdleAfterEvents > 0 writes that many events and then stops writing with
	// the connection open, until the request's context ends or the Server
	// closes; then the connection is closed. With stream:false it sends the
	// headers and half of the body. ResetAfterEvents wins when both are set.
	IdleAfterEvents int

	// PauseAfterEvents > 0 writes that many events of a stream, then waits
	// until Resume is closed and goes on with the rest: the answer stays in
	// flight, mid-stream, for as long as the test likes. If the request's
	// context ends or the Server closes first, the connection is cut. It
	// needs Resume (without it nothing pauses) and does not apply to
	// stream:false. A count that covers the whole stream does not pause.
	PauseAfterEvents int
	// Resume ends the pause of PauseAfterEvents when closed.
	Resume <-chan struct{}

	// InBandFailed, when non-empty, answers 200 with response.created,
	// response.in_progress and then response.failed whose response.error.code
	// is this value, before any output (an in-band refusal such as
	// "server_is_overloaded"). Its usage is null. With stream:false the JSON
	// response has status failed and this error.
	InBandFailed string
	// ErrorEvent is like InBandFailed but ends with an `error` event of the
	// nested shape {"type":"error","error":{"type","code","message","param"}}
	// instead of response.failed. Its code is InBandFailed, or "server_error"
	// when that is empty.
	ErrorEvent bool

	// Incomplete, when non-empty, ends the turn with response.incomplete
	// (status incomplete) whose incomplete_details.reason is this value, for
	// example "max_output_tokens". Usage is sent.
	Incomplete string
	// FailAfterOutput, when non-empty, ends the turn after the output with
	// response.failed whose error.code is this value. Usage is sent.
	FailAfterOutput string
	// NoTerminal ends the stream with a clean EOF right after the output,
	// without a terminal event. stream:false ignores it.
	NoTerminal bool

	// Usage, when non-nil, replaces the computed token counts.
	Usage *Usage
	// FunctionCall, when non-nil, makes the output a function call whatever
	// the request contains.
	FunctionCall *FunctionCall

	// CRLF ends SSE lines with "\r\n" instead of "\n".
	CRLF bool
	// MultiLineData splits each event's JSON over three data: lines.
	MultiLineData bool
	// Comments writes a ": ping" comment block before every event.
	Comments bool
}

// Usage holds token counts as the fake reports them in response.usage.
//
// Without Step.Usage the fake derives them from the request, so tests can
// predict them:
//
//   - Input is 10 plus the number of whitespace-separated words in the
//     instructions and the input items (message text, function call
//     arguments and outputs), plus Input+Output of the previous response
//     when previous_response_id is set.
//   - Cached is the previous response's Input when previous_response_id is
//     set, else 0.
//   - Reasoning is 16 when the request has a non-null reasoning object,
//     else 0.
//   - Output is the number of delta events plus Reasoning.
type Usage struct {
	Input     int64 // input_tokens
	Cached    int64 // input_tokens_details.cached_tokens
	Output    int64 // output_tokens, reasoning included
	Reasoning int64 // output_tokens_details.reasoning_tokens
}

// Total is Input + Output, as total_tokens reports it.
func (u Usage) Total() int64 { return u.Input + u.Output }

// FunctionCall forces a function call output item. Empty fields are
// derived as for an unscripted function call.
type FunctionCall struct {
	// Name is the function's name; "" means the first function tool of the
	// request, or "tool" when it has none.
	Name string
	// Arguments is the JSON arguments string; "" means
	// {"input":<last user text>}.
	Arguments string
	// CallID is the call_id; "" means a fresh "call_" + hex id.
	CallID string
}

// ParseStamp reads the time a StampEvents delta event was written from its
// JSON; ok is false for other events.
func ParseStamp(event []byte) (sent time.Time, ok bool) {
	o := gjson.GetBytes(event, "obfuscation")
	if o.Type != gjson.String || o.Str == "" {
		return time.Time{}, false
	}
	ns, err := strconv.ParseInt(o.Str, 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(0, ns), true
}
