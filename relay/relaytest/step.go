package relaytest

import (
	"cmp"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tidwall/gjson"
)

// Step scripts how the fake answers one request to an account, or one
// response.create on its WebSockets. The zero Step is the normal,
// spec-faithful behaviour; each field changes one thing and fields combine.
//
// A Step acts at three points of an answer:
//
//   - Before anything is answered (After 0): Hold waits, Cut cuts the
//     connection (after Hold), else Status answers with an HTTP status.
//     These act before authentication and validation, like a failing proxy
//     would.
//   - While the answer is produced: FunctionCall, Deltas, EventPadding and
//     Usage shape it, End chooses how it ends, FirstTokenDelay and
//     EventInterval pace it, Events changes how events are written.
//   - After that many events (After > 0): Hold pauses the stream, Cut cuts
//     it; both together pause, then cut.
//
// Header applies to every answer the step produces. On a chat completion
// the fields act as the package documentation's Chat Completions section
// says.
//
// On a WebSocket turn the connection outlives the turn unless said
// otherwise: Cut cuts the connection; Status sends Body as one text message
// when Body is set, else an error message
// {"type":"error","status":Status,"error":{...}} with the error an HTTP
// answer would carry, whose "headers" object (lower-case names, first
// values) is Header, where Codex reads rate-limit headers; a Status below
// 400 without Body sends nothing. End "none" closes the connection with
// status 1000 after the output, the counterpart of a clean EOF.
//
// A Step with Upgrade set answers a WebSocket upgrade request instead of a
// turn; there only Hold, Cut, Status, Body and Header act.
type Step struct {
	// Upgrade makes the step answer the account's WebSocket upgrade
	// requests: Script queues it for them and SetDefault sets their
	// default, apart from the steps of turns, so that one script means the
	// same over HTTP and over a WebSocket. The zero upgrade step accepts the
	// upgrade; Status refuses it with that HTTP status (426 makes clients
	// fall back to HTTP), and Header is also added to the 101 response.
	Upgrade bool

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

	// After is the number of events written before Hold and Cut act; 0:
	// before anything is answered. A count that covers the whole stream
	// acts after the last event, before the body's clean end. With
	// stream:false, Hold and Cut at any After > 0 act after the headers and
	// half of the JSON body; a Hold that ends sends the rest. After > 0 does
	// not apply to a Status answer.
	After int
	// Hold, when non-nil, waits at After until the channel is closed, then
	// goes on with the rest of the step: a test keeps requests in flight,
	// or a stream paused mid-way, for as long as it likes without sleeps. A
	// channel that is never closed hangs (before anything) or stalls the
	// open connection (after events). If the request's context ends or the
	// Server closes first, the connection is closed without a clean end.
	// On a background create it holds the background job instead of the
	// request: at After 0 the response stays queued until Hold is closed;
	// at After > 0 the job pauses there (see the package documentation).
	Hold <-chan struct{}
	// Cut closes the connection at After (after Hold): before anything, with
	// a TCP reset where possible, so the client sees a transport error;
	// after events, mid-body; a background job is never cut. Note that net/http's Transport silently
	// retries a replayable request (for example a POST with an
	// Idempotency-Key header) cut before the headers on a reused
	// connection; the retry takes the account's next step.
	Cut bool

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
	// Events lists, separated by spaces, changes to how events are written:
	//   - "stamp": each delta event's obfuscation string is the time the
	//     fake wrote it, in Unix nanoseconds (decimal), instead of the
	//     padding, so that a client in the same process can tell how long
	//     each event took to reach it.
	//   - "crlf": SSE lines end with "\r\n" instead of "\n".
	//   - "multiline": each event's JSON is split over three data: lines.
	//   - "comments": a ": ping" comment block precedes every event.
	//   - "nousage": a chat completion stream leaves out its usage chunk
	//     even though stream_options.include_usage asks for it, as some
	//     Chat Completions servers do; the finish chunk and [DONE] still
	//     come. Other answers are unchanged.
	// The SSE ones do not apply to WebSocket turns. "" changes nothing; an
	// unknown word panics.
	Events string

	// End is how the turn ends: a word, optionally followed by a space and
	// a code, such as "refused server_is_overloaded".
	//   - "" (or "completed"): response.completed.
	//   - "incomplete": response.incomplete whose
	//     incomplete_details.reason is the code ("max_output_tokens" when
	//     none). Usage is sent.
	//   - "failed": response.failed after the output, whose error.code is
	//     the code ("server_error" when none). Usage is sent.
	//   - "refused": response.failed right after response.in_progress,
	//     before any output, with usage null: an in-band refusal
	//     ("server_error" when no code). With stream:false the JSON response
	//     has status failed and this error.
	//   - "error": like "refused" but an `error` event of the nested shape
	//     {"type":"error","error":{"type","code","message","param"}}.
	//   - "none": a clean EOF right after the output, without a terminal
	//     event (stream:false ignores it).
	// Another word panics.
	End string

	// Usage, when non-nil, replaces the computed token counts.
	Usage *Usage
	// FunctionCall, when non-empty, makes the output a function call
	// whatever the request contains. It is a JSON object whose "name",
	// "arguments" (a JSON string) and "call_id" members set the call's;
	// absent members are derived as for an unscripted function call: the
	// first function tool of the request ("tool" when none),
	// {"input":<last user text>}, a fresh "call_" + hex id. "{}" derives
	// all three.
	FunctionCall string
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
//   - Reasoning is 16 when the request has a non-null reasoning object or
//     the answer has a reasoning item, else 0.
//   - Output is the number of delta events plus Reasoning; a compaction
//     counts Step.Deltas (5 when unset) in place of delta events.
type Usage struct {
	Input     int64 // input_tokens
	Cached    int64 // input_tokens_details.cached_tokens
	Output    int64 // output_tokens, reasoning included
	Reasoning int64 // output_tokens_details.reasoning_tokens
}

// eventOpts is Step.Events parsed.
type eventOpts struct{ stamp, crlf, multi, comments, noUsage bool }

func (s *Step) eventOpts() eventOpts {
	var o eventOpts
	for _, w := range strings.Fields(s.Events) {
		switch w {
		case "stamp":
			o.stamp = true
		case "crlf":
			o.crlf = true
		case "multiline":
			o.multi = true
		case "comments":
			o.comments = true
		case "nousage":
			o.noUsage = true
		default:
			panic("relaytest: unknown word " + strconv.Quote(w) + " in Step.Events")
		}
	}
	return o
}

// Values of Step.End.
const (
	endIncomplete = "incomplete"
	endFailed     = "failed"
	endRefused    = "refused"
	endError      = "error"
	endNone       = "none"
)

// end splits Step.End into its word and code, defaults applied.
func (s *Step) end() (end, code string) {
	end, code, _ = strings.Cut(s.End, " ")
	code = strings.TrimSpace(code)
	switch end {
	case "", statusCompleted:
		return "", ""
	case endIncomplete:
		return end, cmp.Or(code, "max_output_tokens")
	case endFailed, endRefused, endError:
		return end, cmp.Or(code, "server_error")
	case endNone:
		return end, ""
	}
	panic("relaytest: unknown Step.End " + strconv.Quote(s.End))
}

// functionCall reads Step.FunctionCall.
func (s *Step) functionCall() (name, args, callID string) {
	if !gjson.Valid(s.FunctionCall) || !gjson.Parse(s.FunctionCall).IsObject() {
		panic("relaytest: Step.FunctionCall is not a JSON object: " + s.FunctionCall)
	}
	r := gjson.GetMany(s.FunctionCall, "name", "arguments", "call_id")
	return r[0].String(), r[1].String(), r[2].String()
}
