// Package event classifies Responses API stream events once, independent of
// the transport they arrived on (an SSE data line, a WebSocket text frame).
//
// Classification reads the JSON with gjson and does not allocate: the Type
// of a known event is a constant string, and unknown types are reported as
// KindOutput without copying their name.
package event

import (
	"unsafe"

	"github.com/tidwall/gjson"
)

// Kind is what an event means for a relay.
type Kind uint8

const (
	// KindBootstrap events open a response before any output
	// (response.created, response.in_progress, response.queued). A relay may
	// hold them back while it can still fail over.
	KindBootstrap Kind = iota
	// KindOutput is every other non-terminal event: deltas, items, parts,
	// tool progress, and types this package does not know.
	KindOutput
	// KindTerminal ends a turn: response.completed, response.incomplete,
	// response.failed.
	KindTerminal
	// KindError is an "error" event (flat or nested shape). The API does
	// not treat it as terminal, but a stream usually ends after it.
	KindError
)

// Event type names the relay acts on.
const (
	TypeCreated    = "response.created"
	TypeInProgress = "response.in_progress"
	TypeQueued     = "response.queued"
	TypeCompleted  = "response.completed"
	TypeIncomplete = "response.incomplete"
	TypeFailed     = "response.failed"
	TypeError      = "error"
	// TypeOutputItemDone carries one finished output item (message,
	// function call, reasoning, compaction) in its "item".
	TypeOutputItemDone = "response.output_item.done"
)

// Info is the classification of one event.
type Info struct {
	Kind Kind
	// Type is the event's "type". For known types it is a constant; for
	// others it aliases the event bytes and is valid only as long as they are.
	Type string
	// Seq is sequence_number, or -1 when absent.
	Seq int64
}

// Classify reads type and sequence_number of one event's JSON.
func Classify(data []byte) Info {
	s := bytesToString(data)
	t := gjson.Get(s, "type")
	info := Info{Kind: KindOutput, Type: t.Str, Seq: -1}
	if seq := gjson.Get(s, "sequence_number"); seq.Type == gjson.Number {
		info.Seq = seq.Int()
	}
	switch t.Str {
	case TypeCreated:
		info.Kind, info.Type = KindBootstrap, TypeCreated
	case TypeInProgress:
		info.Kind, info.Type = KindBootstrap, TypeInProgress
	case TypeQueued:
		info.Kind, info.Type = KindBootstrap, TypeQueued
	case TypeCompleted:
		info.Kind, info.Type = KindTerminal, TypeCompleted
	case TypeIncomplete:
		info.Kind, info.Type = KindTerminal, TypeIncomplete
	case TypeFailed:
		info.Kind, info.Type = KindTerminal, TypeFailed
	case TypeError:
		info.Kind, info.Type = KindError, TypeError
	case "response.output_text.delta":
		info.Type = "response.output_text.delta"
	}
	return info
}

// IsError reports whether data is an "error" event, looking no further
// than its type (which comes first in upstream events), without copying.
func IsError(data []byte) bool {
	return gjson.Get(bytesToString(data), "type").Str == TypeError
}

// bytesToString views b as a string without copying. The string must not
// outlive b's contents; gjson results taken from it alias b too.
func bytesToString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(unsafe.SliceData(b), len(b))
}
