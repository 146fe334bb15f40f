package chat

import (
	"bytes"
	"fmt"

	"github.com/relaykit/responsesrelay/internal/event"
	"github.com/relaykit/responsesrelay/internal/jsonx"
	"github.com/tidwall/gjson"
)

// maxItems bounds the output items of one response: finding the item of a
// call piece is linear in them, and no real answer comes near.
const maxItems = 1024

// Stream translates one Chat Completions SSE stream into Responses events.
// It is not safe for concurrent use; a relay keeps one per streamed turn.
type Stream struct {
	o    output
	done bool
}

// NewStream starts the translation of one streamed turn. ids makes the
// response and item ids (nil: RandomID); requestedModel is the model the
// client asked for, which the events echo; created is created_at.
func NewStream(ids IDs, requestedModel string, created int64) *Stream {
	return &Stream{o: newOutput(ids, requestedModel, created)}
}

// Push translates one data: payload (a chunk's JSON, or [DONE]) and appends
// the resulting events to ev; many chunks yield none.
//
// The first chunk yields response.created and response.in_progress. [DONE]
// yields the terminal event (response.completed, or response.incomplete
// when finish_reason was length or content_filter) with the whole output;
// when no usage chunk came it also returns ErrNoUsage, after appending.
// A chunk carrying an error returns an *UpstreamError and appends nothing;
// a payload that is not a JSON object returns an error wrapping
// ErrMalformed. Payloads after the terminal event are ignored.
func (s *Stream) Push(ev *Events, payload []byte) error {
	if s.done {
		return nil
	}
	s.o.ev = ev
	p := bytes.TrimSpace(payload)
	if string(p) == "[DONE]" {
		return s.end()
	}
	str := bytesToString(p)
	// The structure is checked, not every token: the chunk's fields are
	// read one by one and every string is re-encoded, so a bare word where
	// a value should be cannot reach the client; a cut chunk can, and is
	// caught here (gjson.Valid cost a fifth of the translation).
	if !jsonx.Complete(p, jsonx.MaxDepth) {
		return fmt.Errorf("%w: a stream chunk is not JSON", ErrMalformed)
	}
	if p[0] != '{' {
		return fmt.Errorf("%w: a stream chunk is not an object", ErrMalformed)
	}
	if !bytes.Contains(p, keyError) && !bytes.Contains(p, keyUsage) {
		// Most chunks carry one piece and neither member: the path to the
		// first choice is all that is read (the members after it are not
		// scanned at all).
		if !s.o.started {
			s.o.start()
		}
		if c := gjson.Get(str, "choices.0"); c.IsObject() {
			return s.choice(c)
		}
		return nil
	}
	root := gjson.Parse(str)
	if !root.IsObject() {
		return fmt.Errorf("%w: a stream chunk is not an object", ErrMalformed)
	}
	// One pass over the top-level members: each Get would scan the chunk
	// again, and a chunk carries every member at most once that matters.
	var choices, usage gjson.Result
	var failed error
	root.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "choices":
			choices = v
		case "usage":
			usage = v
		case "error":
			if v.Type != gjson.Null {
				failed = upstreamError(v)
				return false
			}
		}
		return true
	})
	if failed != nil {
		return failed
	}
	if !s.o.started {
		s.o.start()
	}
	// Only choice 0: the relay never asks for n > 1.
	var c gjson.Result
	if choices.IsArray() {
		choices.ForEach(func(_, v gjson.Result) bool {
			c = v
			return false
		})
	}
	if c.IsObject() {
		if err := s.choice(c); err != nil {
			return err
		}
	}
	if usage.IsObject() {
		s.o.setUsage(usage)
	}
	return nil
}

// choice applies the first choice of a chunk: its delta's pieces, in the
// order reasoning, content, refusal, tool calls, then its finish_reason.
func (s *Stream) choice(c gjson.Result) error {
	var delta, finish gjson.Result
	index := int64(0)
	c.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "delta":
			delta = v
		case "finish_reason":
			finish = v
		case "index":
			index = v.Int()
		}
		return true
	})
	if index != 0 {
		return nil
	}
	var reasoning, reasoningAlt, content, refusal, calls gjson.Result
	if delta.IsObject() {
		delta.ForEach(func(k, v gjson.Result) bool {
			switch k.Str {
			case "reasoning_content":
				reasoning = v
			case "reasoning":
				reasoningAlt = v
			case "content":
				content = v
			case "refusal":
				refusal = v
			case "tool_calls":
				calls = v
			}
			return true
		})
	}
	switch {
	case reasoning.Type == gjson.String:
		s.o.piece(kindReasoning, reasoning.Str)
	case reasoningAlt.Type == gjson.String:
		s.o.piece(kindReasoning, reasoningAlt.Str)
	default:
		s.o.piece(kindReasoning, "")
	}
	if content.Type == gjson.String {
		s.o.piece(kindMessage, content.Str)
	}
	if refusal.Type == gjson.String {
		s.o.piece(kindRefusal, refusal.Str)
	}
	if calls.IsArray() {
		var err error
		calls.ForEach(func(_, t gjson.Result) bool {
			if len(s.o.items) >= maxItems {
				err = fmt.Errorf("%w: more than %d output items", ErrMalformed, maxItems)
				return false
			}
			index := -1
			if i := t.Get("index"); i.Type == gjson.Number && i.Num >= 0 && i.Num < 1<<20 {
				index = int(i.Num)
			}
			s.o.callPiece(index, t.Get("id").String(), t.Get("function.name").String(), t.Get("function.arguments").String())
			return true
		})
		if err != nil {
			return err
		}
	}
	if finish.Type == gjson.String && finish.Str != "" {
		s.o.finish = finishReason(finish.Str)
		s.o.closeAll()
	}
	return nil
}

var keyError, keyUsage = []byte(`"error"`), []byte(`"usage"`)

// finishReason keeps a finish_reason past the payload it aliases, without
// copying the usual ones.
func finishReason(r string) string {
	for _, k := range [...]string{"stop", "length", "tool_calls", "content_filter", "function_call"} {
		if r == k {
			return k
		}
	}
	return clone(r)
}

// reasoningText is a delta's or message's reasoning: reasoning_content, or
// reasoning as some servers name it.
func reasoningText(d gjson.Result) string {
	if r := d.Get("reasoning_content"); r.Type == gjson.String {
		return r.Str
	}
	if r := d.Get("reasoning"); r.Type == gjson.String {
		return r.Str
	}
	return ""
}

// End handles the upstream closing the stream (EOF) and appends what is
// owed. After [DONE] or Fail it does nothing. Some servers end without
// [DONE]: once a finish_reason came, End appends the terminal event as
// [DONE] would (returning ErrNoUsage when usage is missing). Before a
// finish_reason it appends nothing and returns ErrCutShort: the relay ends
// the stream with Fail.
func (s *Stream) End(ev *Events) error {
	if s.done {
		return nil
	}
	if s.o.finish == "" {
		return ErrCutShort
	}
	s.o.ev = ev
	return s.end()
}

func (s *Stream) end() error {
	s.done = true
	if !s.o.started {
		s.o.start()
	}
	s.o.terminal()
	if !s.o.usage.Present {
		return ErrNoUsage
	}
	return nil
}

// Fail appends response.failed, with error {code, message} and the output
// so far, continuing the sequence numbers (after response.created and
// response.in_progress when nothing was sent yet). It does nothing after
// the terminal event.
func (s *Stream) Fail(ev *Events, code, message string) {
	if s.done {
		return
	}
	s.done = true
	s.o.ev = ev
	if !s.o.started {
		s.o.start()
	}
	s.o.failed(code, message)
}

// Done reports whether the terminal event has been appended.
func (s *Stream) Done() bool { return s.done }

// HasOutput reports whether an output item has been announced: before
// that, only response.created and response.in_progress went out and the
// relay may still fail over.
func (s *Stream) HasOutput() bool { return len(s.o.items) > 0 }

// ID is the response id the events carry.
func (s *Stream) ID() string { return s.o.id }

// Usage is the token accounting the upstream reported so far; Present is
// false when no usage chunk came.
func (s *Stream) Usage() event.Usage { return s.o.usage }

// upstreamError reads an error member: an object, or a bare message.
func upstreamError(e gjson.Result) *UpstreamError {
	if !e.IsObject() {
		return &UpstreamError{Message: e.String()}
	}
	return &UpstreamError{Message: e.Get("message").String(), Type: e.Get("type").String(), Code: e.Get("code").String()}
}
