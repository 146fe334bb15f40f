package chat

import (
	"fmt"

	"github.com/relaykit/responsesrelay/internal/jsonx"
	"github.com/tidwall/gjson"
)

// Response maps a non-streaming Chat Completions answer to the Responses
// object, made of the same items, statuses and usage as the terminal event
// of the equivalent stream. ids makes the relay's ids (nil: RandomID);
// requestedModel is the model the client asked for.
//
// An answer carrying an error returns an *UpstreamError; one without
// choices, an error wrapping ErrMalformed. An answer without usage is
// translated (usage null) and returned together with ErrNoUsage.
func Response(chat []byte, ids IDs, requestedModel string, echo []byte) ([]byte, error) {
	if jsonx.DepthExceeds(chat, jsonx.MaxDepth) || !gjson.ValidBytes(chat) {
		return nil, fmt.Errorf("%w: the answer is not JSON", ErrMalformed)
	}
	root := gjson.ParseBytes(chat)
	if e := root.Get("error"); e.Exists() && e.Type != gjson.Null {
		return nil, upstreamError(e)
	}
	c := root.Get("choices.0")
	if !c.IsObject() {
		return nil, fmt.Errorf("%w: the answer has no choices", ErrMalformed)
	}
	o := newOutput(ids, requestedModel, root.Get("created").Int())
	o.echo = echo
	m := c.Get("message")
	o.piece(kindReasoning, reasoningText(m))
	o.piece(kindMessage, m.Get("content").String())
	o.piece(kindRefusal, m.Get("refusal").String())
	calls := m.Get("tool_calls").Array()
	if len(calls) > maxItems-2 {
		return nil, fmt.Errorf("%w: more than %d output items", ErrMalformed, maxItems)
	}
	for i, t := range calls {
		o.callPiece(i, t.Get("id").String(), t.Get("function.name").String(), t.Get("function.arguments").String())
	}
	o.finish = c.Get("finish_reason").String()
	if u := root.Get("usage"); u.IsObject() {
		o.setUsage(u)
	}
	o.terminal()
	st, reason := o.status()
	out := o.appendObject(make([]byte, 0, len(chat)+len(echo)+512), st, reason, &o.items)
	if !o.usage.Present {
		return out, ErrNoUsage
	}
	return out, nil
}
