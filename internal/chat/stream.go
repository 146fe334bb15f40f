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
	// Reused from chunk to chunk, so that a chunk costs no allocation.
	scan    jsonx.Scanner
	keyBuf  []byte // a key with escapes, decoded
	scratch []byte // strings with escapes, decoded; valid during one Push
	prefix  []byte // the leading members of the last chunk (chunk.go)
}

// NewStream starts the translation of one streamed turn. ids makes the
// response and item ids (nil: RandomID); requestedModel is the model the
// client asked for, which the events echo; created is created_at.
func NewStream(ids IDs, requestedModel string, created int64) *Stream {
	return &Stream{o: newOutput(ids, requestedModel, created)}
}

// Echo sets the request echoes every response object of the stream ends
// with: JSON members, each with a leading comma (Echo builds them). Set it
// before the first Push.
func (s *Stream) Echo(members []byte) { s.o.echo = members }

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
	// Every token is checked, in the pass that reads the members: a chunk
	// that is cut or not JSON changes nothing.
	var c chunkInfo
	if !s.read(p, &c) {
		s.scan.Reset(p, jsonx.MaxDepth)
		if s.scan.Skip(); s.scan.End() {
			return fmt.Errorf("%w: a stream chunk is not an object", ErrMalformed)
		}
		return fmt.Errorf("%w: a stream chunk is not JSON", ErrMalformed)
	}
	s.scratch = s.scratch[:0]
	if c.err != nil {
		return upstreamError(gjson.ParseBytes(c.err))
	}
	if !s.o.started {
		s.o.start()
	}
	// Only choice 0: the relay never asks for n > 1.
	if c.choice && !c.other {
		if err := s.choice(&c); err != nil {
			return err
		}
	}
	if c.usage != nil {
		s.o.setUsage(gjson.ParseBytes(c.usage))
	}
	return nil
}

// choice applies the first choice of a chunk: its delta's pieces, in the
// order reasoning, content, refusal, tool calls, then its finish_reason.
func (s *Stream) choice(c *chunkInfo) error {
	switch {
	case c.reasoning.ok:
		s.o.pieceText(kindReasoning, c.reasoning)
	case c.reasoningAlt.ok:
		s.o.pieceText(kindReasoning, c.reasoningAlt)
	}
	if c.content.ok {
		s.o.pieceText(kindMessage, c.content)
	}
	if c.refusal.ok {
		s.o.pieceText(kindRefusal, c.refusal)
	}
	if c.calls != nil {
		if err := s.calls(c.calls); err != nil {
			return err
		}
	}
	if c.finish.ok && len(c.finish.raw) > 0 {
		s.o.finish = finishReason(s.decoded(c.finish))
		s.o.closeAll()
	}
	return nil
}

// calls applies a tool_calls array, already validated.
func (s *Stream) calls(raw []byte) error {
	sc := &s.scan
	sc.Reset(raw, jsonx.MaxDepth)
	sc.BeginArray()
	for sc.NextElement() {
		if len(s.o.items) >= maxItems {
			return fmt.Errorf("%w: more than %d output items", ErrMalformed, maxItems)
		}
		start := sc.Offset()
		index, id, name, args, ok := s.call()
		if !ok {
			// An unusual call (a member twice, or not a string) is read as
			// gjson reads it, the first occurrence counting.
			t := gjson.ParseBytes(sc.Since(start))
			index = -1
			if i := t.Get("index"); i.Type == gjson.Number && i.Num >= 0 && i.Num < 1<<20 {
				index = int(i.Num)
			}
			s.o.callPiece(index, t.Get("id").String(), t.Get("function.name").String(), t.Get("function.arguments").String())
			continue
		}
		s.o.callPieceText(index, s.decoded(id), s.decoded(name), args)
	}
	return nil
}

// call reads one tool call: index (-1 when there is none), id,
// function.name and function.arguments. ok is false, the call read whole,
// when it is not an object or one of those members is repeated or neither
// a string nor null.
func (s *Stream) call() (index int, id, name, args text, ok bool) {
	sc := &s.scan
	index = -1
	if sc.Peek() != '{' {
		sc.Skip()
		return index, id, name, args, false
	}
	ok = true
	var seen uint8
	sc.BeginObject()
	for sc.NextMember() {
		key := s.key()
		switch key {
		case "index":
			ok = ok && seen&1 == 0
			seen |= 1
			if c := sc.Peek(); c == '-' || '0' <= c && c <= '9' {
				if v := number(sc.Number()); v >= 0 && v < 1<<20 {
					index = int(v)
				}
				continue
			}
			sc.Skip()
		case "id":
			ok = ok && seen&2 == 0
			seen |= 2
			id, ok = s.stringOrNull(ok)
		case "function":
			ok = ok && seen&4 == 0
			seen |= 4
			if !sc.BeginObject() {
				sc.Skip()
				continue
			}
			var fseen uint8
			for sc.NextMember() {
				key := s.key()
				switch key {
				case "name":
					ok = ok && fseen&1 == 0
					fseen |= 1
					name, ok = s.stringOrNull(ok)
				case "arguments":
					ok = ok && fseen&2 == 0
					fseen |= 2
					args, ok = s.stringOrNull(ok)
				default:
					sc.Skip()
				}
			}
		default:
			sc.Skip()
		}
	}
	return index, id, name, args, ok
}

// stringOrNull reads a string, or null as no text; ok turns false for any
// other value.
func (s *Stream) stringOrNull(ok bool) (text, bool) {
	if s.scan.Peek() == 'n' {
		s.scan.Skip()
		return text{}, ok
	}
	t := s.text()
	return t, ok && t.ok
}

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
