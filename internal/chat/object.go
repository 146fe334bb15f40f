package chat

import (
	"github.com/relaykit/responsesrelay/internal/event"
	"strconv"
	"unsafe"

	"github.com/relaykit/responsesrelay/internal/jsonx"
)

// The Responses JSON the translator writes. Members are those a client
// reads (id, object, created_at, status, error, incomplete_details, model,
// output, usage), then the request echoes the caller gives (Echo), as the
// API repeats a request's settings in every response object.

// appendObject appends the response object. items nil writes an empty
// output and null usage, as on response.created.
func (o *output) appendObject(b []byte, status, reason string, items *[]item) []byte {
	return o.appendAny(b, status, reason, "", "", items)
}

func (o *output) appendFailed(b []byte, code, message string) []byte {
	return o.appendAny(b, statusFailed, "", code, message, &o.items)
}

func (o *output) appendAny(b []byte, status, reason, code, message string, items *[]item) []byte {
	b = append(b, `{"id":`...)
	b = jsonx.AppendString(b, o.id)
	b = append(b, `,"object":"response","created_at":`...)
	b = strconv.AppendInt(b, o.created, 10)
	b = append(b, `,"status":"`...)
	b = append(b, status...)
	b = append(b, `","error":`...)
	if status == statusFailed {
		b = append(b, `{"code":`...)
		b = jsonx.AppendString(b, code)
		b = append(b, `,"message":`...)
		b = jsonx.AppendString(b, message)
		b = append(b, '}')
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"incomplete_details":`...)
	if reason != "" {
		b = append(b, `{"reason":`...)
		b = jsonx.AppendString(b, reason)
		b = append(b, '}')
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"model":`...)
	b = jsonx.AppendString(b, o.model)
	b = append(b, `,"output":[`...)
	if items != nil {
		for i := range *items {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendItem(b, &(*items)[i], true)
		}
	}
	b = append(b, `],"usage":`...)
	if items == nil || !o.usage.Present {
		b = append(b, "null"...)
	} else {
		b = appendUsage(b, o.usage)
	}
	b = append(b, o.echo...)
	return append(b, '}')
}

func appendUsage(b []byte, u event.Usage) []byte {
	b = append(b, `{"input_tokens":`...)
	b = strconv.AppendInt(b, u.Input, 10)
	b = append(b, `,"input_tokens_details":{"cached_tokens":`...)
	b = strconv.AppendInt(b, u.CachedInput, 10)
	b = append(b, `},"output_tokens":`...)
	b = strconv.AppendInt(b, u.Output, 10)
	b = append(b, `,"output_tokens_details":{"reasoning_tokens":`...)
	b = strconv.AppendInt(b, u.Reasoning, 10)
	b = append(b, `},"total_tokens":`...)
	b = strconv.AppendInt(b, u.Total, 10)
	return append(b, '}')
}

// appendItem appends an output item; full includes its text (added events
// announce an item empty, as the Responses API does).
//
// Reasoning text is written as content:[{"type":"reasoning_text"}], the
// form the Responses API uses for raw reasoning, with an empty summary: a
// Chat upstream's reasoning_content is the reasoning itself, not a summary.
func appendItem(b []byte, it *item, full bool) []byte {
	status := it.status
	if status == "" {
		status = statusInProgress
	}
	b = append(b, `{"id":`...)
	b = jsonx.AppendString(b, it.id)
	switch it.kind {
	case kindReasoning:
		b = append(b, `,"type":"reasoning","summary":[],"content":[`...)
		if full {
			b = appendPart(b, kindReasoning, bytesToString(it.text))
		}
		return append(b, "]}"...)
	case kindMessage, kindRefusal:
		b = append(b, `,"type":"message","status":"`...)
		b = append(b, status...)
		b = append(b, `","content":[`...)
		if full {
			b = appendPart(b, it.kind, bytesToString(it.text))
		}
		return append(b, `],"role":"assistant"}`...)
	}
	b = append(b, `,"type":"function_call","status":"`...)
	b = append(b, status...)
	b = append(b, `","arguments":`...)
	if full {
		b = jsonx.AppendString(b, bytesToString(it.text))
	} else {
		b = append(b, `""`...)
	}
	b = append(b, `,"call_id":`...)
	b = jsonx.AppendString(b, it.callID)
	b = append(b, `,"name":`...)
	b = jsonx.AppendString(b, it.name)
	return append(b, '}')
}

func appendPart(b []byte, kind itemKind, text string) []byte {
	switch kind {
	case kindReasoning:
		b = append(b, `{"type":"reasoning_text","text":`...)
	case kindRefusal:
		b = append(b, `{"type":"refusal","refusal":`...)
	default:
		b = append(b, `{"type":"output_text","annotations":[],"logprobs":[],"text":`...)
	}
	b = jsonx.AppendString(b, text)
	return append(b, '}')
}

// appendRef appends the item_id, output_index and, for a content event,
// content_index members of an event.
func appendRef(b []byte, id string, at int, content bool) []byte {
	b = append(b, `,"item_id":`...)
	b = jsonx.AppendString(b, id)
	b = append(b, `,"output_index":`...)
	b = strconv.AppendInt(b, int64(at), 10)
	if content {
		b = append(b, `,"content_index":0`...)
	}
	return b
}

// bytesToString views b as a string without copying; the string must not
// outlive b's contents.
func bytesToString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(unsafe.SliceData(b), len(b))
}
