// Package event classifies Responses API stream events once, independent of
// the transport they arrived on (an SSE data line, a WebSocket text frame).
//
// Classification reads an event's leading type and sequence_number
// directly where the upstream writes them first, and with gjson otherwise;
// it does not allocate: the Type of a known event is a constant string,
// and unknown types are reported as KindOutput without copying their name.
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
	info := Info{Kind: KindOutput, Seq: -1}
	typ, rest, ok := leadingType(data)
	if !ok {
		typ = gjson.Get(bytesToString(data), "type").Str
	}
	if seq, ok := leadingSeq(rest); ok {
		info.Seq = seq
	} else if v := gjson.Get(bytesToString(data), "sequence_number"); v.Type == gjson.Number {
		info.Seq = v.Int()
	}
	info.Type = typ
	switch typ {
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

// The upstream writes an event's JSON compact, with type first and
// sequence_number second: {"type":"…","sequence_number":N,…}. Read so,
// a classification costs a prefix comparison and a few bytes; gjson's
// walk, which also parses the number it finds as a float, costs six to
// eight times as much per event (BenchmarkClassify against
// BenchmarkClassifyUpstreamOrder). Anything else, or anything
// these readers are unsure of (an escape, a number that is not a plain
// integer), goes to gjson, so the result is gjson's in every case
// (FuzzClassifyAsGJSON).
const (
	typePrefix = `{"type":"`
	seqPrefix  = `,"sequence_number":`
)

// leadingType reads the type of an event that starts with it; rest is
// what follows its closing quote.
func leadingType(data []byte) (typ string, rest []byte, ok bool) {
	if len(data) < len(typePrefix) || string(data[:len(typePrefix)]) != typePrefix {
		return "", nil, false
	}
	body := data[len(typePrefix):]
	for i, c := range body {
		switch {
		case c == '"':
			return bytesToString(body[:i]), body[i+1:], true
		case c == '\\' || c < 0x20:
			return "", nil, false
		}
	}
	return "", nil, false
}

// leadingSeq reads a sequence_number that comes first in rest.
func leadingSeq(rest []byte) (int64, bool) {
	if len(rest) < len(seqPrefix) || string(rest[:len(seqPrefix)]) != seqPrefix {
		return 0, false
	}
	digits := rest[len(seqPrefix):]
	var n int64
	i := 0
	for ; i < len(digits) && digits[i] >= '0' && digits[i] <= '9'; i++ {
		n = n*10 + int64(digits[i]-'0')
	}
	switch {
	case i == 0 || i > 15: // none, or beyond a float's exact integers
		return 0, false
	case i > 1 && digits[0] == '0': // not JSON
		return 0, false
	case i == len(digits) || digits[i] != ',' && digits[i] != '}':
		return 0, false // a fraction, an exponent, or cut short
	}
	return n, true
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
