package chat

import (
	"errors"
	"strings"
)

// UnsupportedError reports a request that has no Chat Completions form: a
// built-in tool, an item reference, a content part without a Chat
// equivalent. The relay answers 400 with Error() as the message and Param
// as the error's param.
type UnsupportedError struct {
	// What names the offending element, e.g. `tool type "web_search"`.
	What string
	// Param is the JSON path of the element in the request, e.g. "tools[2]".
	Param string
}

func (e *UnsupportedError) Error() string {
	return "this model's upstream speaks Chat Completions, which has no form for " + e.What
}

// UpstreamError is an error a Chat Completions upstream reported inside a
// stream (data: {"error":{...}}) or in place of a JSON answer. Before any
// output went to the client the relay may fail over; after, it ends the
// stream with Stream.Fail.
type UpstreamError struct {
	Message, Type, Code string
}

func (e *UpstreamError) Error() string {
	var b strings.Builder
	b.WriteString("chat completions upstream error")
	if e.Code != "" {
		b.WriteString(" (" + e.Code + ")")
	}
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	return b.String()
}

var (
	// ErrNoUsage is returned with the terminal event when the upstream
	// ended its stream without a usage chunk: the events are valid, but the
	// turn cannot be billed from them, so the relay records it as an
	// upstream error.
	ErrNoUsage = errors.New("chat completions stream ended without usage")
	// ErrCutShort is returned by Stream.End when the upstream closed the
	// stream before a finish_reason or [DONE]: no terminal event is
	// appended; the relay ends the stream with Stream.Fail.
	ErrCutShort = errors.New("chat completions stream ended before it finished")
	// ErrMalformed reports a payload that is not a JSON object, or an
	// answer without choices.
	ErrMalformed = errors.New("malformed chat completions payload")
)
