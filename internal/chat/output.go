package chat

import (
	"strconv"

	"github.com/relaykit/responsesrelay/internal/event"
	"github.com/relaykit/responsesrelay/internal/jsonx"
	"github.com/tidwall/gjson"
)

// The output model shared by Response and Stream: items open as pieces of
// their kind arrive and close when another kind starts or the upstream
// finishes. Function calls stay open until the finish, because a Chat
// upstream interleaves parallel calls by index.

type itemKind uint8

const (
	kindReasoning itemKind = iota
	kindMessage
	kindRefusal // a message whose content is a refusal part
	kindCall
)

const (
	statusInProgress = "in_progress"
	statusCompleted  = "completed"
	statusIncomplete = "incomplete"
	statusFailed     = "failed"
)

const (
	typeCreated     = "response.created"
	typeInProgress  = "response.in_progress"
	typeCompleted   = "response.completed"
	typeIncomplete  = "response.incomplete"
	typeFailed      = "response.failed"
	typeItemAdded   = "response.output_item.added"
	typeItemDone    = "response.output_item.done"
	typePartAdded   = "response.content_part.added"
	typePartDone    = "response.content_part.done"
	typeTextDelta   = "response.output_text.delta"
	typeTextDone    = "response.output_text.done"
	typeReasonDelta = "response.reasoning_text.delta"
	typeReasonDone  = "response.reasoning_text.done"
	typeRefuseDelta = "response.refusal.delta"
	typeRefuseDone  = "response.refusal.done"
	typeArgsDelta   = "response.function_call_arguments.delta"
	typeArgsDone    = "response.function_call_arguments.done"
)

type item struct {
	kind   itemKind
	id     string
	callID string
	name   string
	index  int    // the upstream tool call index; -1 when it sent none
	text   []byte // reasoning text, message text or call arguments
	status string // "" while open
	// ref is the item's reference in its events (appendRef), made once.
	ref []byte
}

type output struct {
	ids     IDs
	id      string
	model   string
	created int64
	seq     int64
	ev      *Events // where events go; nil builds the output only
	items   []item
	cur     int // the open reasoning or message item, or -1
	started bool
	finish  string      // the upstream finish_reason
	usage   event.Usage // Present: a usage chunk came
	echo    []byte      // request echoes: members, each with a leading comma
}

func newOutput(ids IDs, model string, created int64) output {
	return output{ids: ids, id: ids.make("resp_"), model: model, created: created, cur: -1}
}

// status is the response status and incomplete reason for the finish_reason.
func (o *output) status() (status, reason string) {
	switch o.finish {
	case "length":
		return statusIncomplete, "max_output_tokens"
	case "content_filter":
		return statusIncomplete, "content_filter"
	}
	return statusCompleted, ""
}

func (o *output) start() {
	o.started = true
	if o.ev == nil {
		return
	}
	for _, typ := range [...]string{typeCreated, typeInProgress} {
		b := o.ev.begin(typ, o.next())
		b = append(b, `,"response":`...)
		b = o.appendObject(b, statusInProgress, "", nil)
		o.ev.finish(b, typ)
	}
}

func (o *output) next() int64 {
	o.seq++
	return o.seq - 1
}

// piece adds reasoning, message or refusal text.
func (o *output) piece(kind itemKind, text string) {
	if text == "" {
		return
	}
	at := o.pieceItem(kind)
	it := &o.items[at]
	it.text = append(it.text, text...)
	if o.ev != nil {
		o.delta(kind, at, text, nil)
	}
}

// pieceText is piece for a JSON string as the upstream wrote it, which
// the delta event repeats as it stands when its bytes are already what
// jsonx.AppendString would write.
func (o *output) pieceText(kind itemKind, t text) {
	if len(t.raw) == 0 {
		return
	}
	at := o.pieceItem(kind)
	it := &o.items[at]
	n := len(it.text)
	it.text = appendDecoded(it.text, t)
	if o.ev != nil {
		o.delta(kind, at, bytesToString(it.text[n:]), verbatim(t))
	}
}

// pieceItem is the open item of kind, opened (and another closed) as
// needed.
func (o *output) pieceItem(kind itemKind) int {
	if o.cur >= 0 && o.items[o.cur].kind != kind {
		o.close(o.cur, statusCompleted)
	}
	if o.cur < 0 {
		prefix := "msg_"
		if kind == kindReasoning {
			prefix = "rs_"
		}
		o.cur = o.open(item{kind: kind, id: o.ids.make(prefix), index: -1})
	}
	return o.cur
}

// delta appends the delta event of a text piece: quoted, the piece's JSON
// string when the caller has it (raw, without its quotes), else text.
func (o *output) delta(kind itemKind, at int, text string, raw []byte) {
	typ := typeTextDelta
	switch kind {
	case kindReasoning:
		typ = typeReasonDelta
	case kindRefusal:
		typ = typeRefuseDelta
	}
	b := o.ev.begin(typ, o.next())
	b = append(b, o.ref(at)...)
	b = append(b, `,"delta":`...)
	b = appendJSONString(b, text, raw)
	if kind == kindMessage {
		b = append(b, `,"logprobs":[]`...)
	}
	o.ev.finish(b, typ)
}

// callPiece adds a piece of a function call. index < 0 means the upstream
// sent none: the piece belongs to the call with its id, or the last call.
func (o *output) callPiece(index int, id, name, args string) {
	at := o.callItem(index, id, name)
	if args == "" {
		return
	}
	it := &o.items[at]
	it.text = append(it.text, args...)
	if o.ev != nil {
		o.argsDelta(at, args, nil)
	}
}

// callPieceText is callPiece with the arguments as the upstream wrote them.
func (o *output) callPieceText(index int, id, name string, args text) {
	at := o.callItem(index, id, name)
	if len(args.raw) == 0 {
		return
	}
	it := &o.items[at]
	n := len(it.text)
	it.text = appendDecoded(it.text, args)
	if o.ev != nil {
		o.argsDelta(at, bytesToString(it.text[n:]), verbatim(args))
	}
}

// callItem is the call a piece belongs to, opened as needed.
func (o *output) callItem(index int, id, name string) int {
	if o.cur >= 0 {
		o.close(o.cur, statusCompleted)
	}
	at := -1
	for i := len(o.items) - 1; i >= 0; i-- {
		it := &o.items[i]
		if it.kind != kindCall || it.status != "" {
			continue
		}
		if index >= 0 && it.index == index || index < 0 && (id == "" || it.callID == id) {
			at = i
			break
		}
	}
	if at < 0 {
		if id == "" {
			id = o.ids.make("call_")
		}
		// Copies: id and name alias the upstream payload.
		at = o.open(item{kind: kindCall, id: o.ids.make("fc_"), callID: clone(id), name: clone(name), index: index})
	}
	it := &o.items[at]
	if it.name == "" && name != "" {
		it.name = clone(name)
	}
	return at
}

func (o *output) argsDelta(at int, args string, raw []byte) {
	b := o.ev.begin(typeArgsDelta, o.next())
	b = append(b, o.ref(at)...)
	b = append(b, `,"delta":`...)
	b = appendJSONString(b, args, raw)
	o.ev.finish(b, typeArgsDelta)
}

// appendDecoded appends t's value.
func appendDecoded(b []byte, t text) []byte {
	if t.flags&jsonx.Escaped == 0 {
		return append(b, t.raw...)
	}
	return jsonx.AppendUnescaped(b, t.raw)
}

// verbatim is t's raw content when it can be written as it stands, else nil.
func verbatim(t text) []byte {
	if jsonx.Verbatim(t.raw, t.flags) {
		return t.raw
	}
	return nil
}

// appendJSONString appends s as a JSON string: raw quoted when it is not
// nil (the same bytes, known to be what AppendString writes for s).
func appendJSONString(b []byte, s string, raw []byte) []byte {
	if raw == nil {
		return jsonx.AppendString(b, s)
	}
	b = append(b, '"')
	b = append(b, raw...)
	return append(b, '"')
}

func clone(s string) string { return string(append([]byte(nil), s...)) }

// ref is item i's reference in its events, made at its first event.
func (o *output) ref(i int) []byte {
	it := &o.items[i]
	if it.ref == nil {
		it.ref = appendRef(make([]byte, 0, 64), it.id, i, it.kind != kindCall)
	}
	return it.ref
}

// open appends an item and announces it.
func (o *output) open(it item) int {
	o.items = append(o.items, it)
	at := len(o.items) - 1
	if o.ev == nil {
		return at
	}
	p := &o.items[at]
	b := o.ev.begin(typeItemAdded, o.next())
	b = append(b, `,"output_index":`...)
	b = strconv.AppendInt(b, int64(at), 10)
	b = append(b, `,"item":`...)
	b = appendItem(b, p, false)
	o.ev.finish(b, typeItemAdded)
	if p.kind != kindCall {
		b = o.ev.begin(typePartAdded, o.next())
		b = append(b, o.ref(at)...)
		b = append(b, `,"part":`...)
		b = appendPart(b, p.kind, "")
		o.ev.finish(b, typePartAdded)
	}
	return at
}

// close finishes item i with the given status.
func (o *output) close(i int, status string) {
	it := &o.items[i]
	it.status = status
	if i == o.cur {
		o.cur = -1
	}
	if o.ev == nil {
		return
	}
	switch it.kind {
	case kindCall:
		b := o.ev.begin(typeArgsDone, o.next())
		b = append(b, o.ref(i)...)
		b = append(b, `,"name":`...)
		b = jsonx.AppendString(b, it.name)
		b = append(b, `,"arguments":`...)
		b = jsonx.AppendString(b, bytesToString(it.text))
		o.ev.finish(b, typeArgsDone)
	default:
		typ, field := typeTextDone, `,"text":`
		switch it.kind {
		case kindReasoning:
			typ = typeReasonDone
		case kindRefusal:
			typ, field = typeRefuseDone, `,"refusal":`
		}
		b := o.ev.begin(typ, o.next())
		b = append(b, o.ref(i)...)
		b = append(b, field...)
		b = jsonx.AppendString(b, bytesToString(it.text))
		if it.kind == kindMessage {
			b = append(b, `,"logprobs":[]`...)
		}
		o.ev.finish(b, typ)
		b = o.ev.begin(typePartDone, o.next())
		b = append(b, o.ref(i)...)
		b = append(b, `,"part":`...)
		b = appendPart(b, it.kind, bytesToString(it.text))
		o.ev.finish(b, typePartDone)
	}
	b := o.ev.begin(typeItemDone, o.next())
	b = append(b, `,"output_index":`...)
	b = strconv.AppendInt(b, int64(i), 10)
	b = append(b, `,"item":`...)
	b = appendItem(b, it, true)
	o.ev.finish(b, typeItemDone)
}

// closeAll finishes every open item: the finish_reason says whether the
// items still open were cut.
func (o *output) closeAll() {
	st, _ := o.status()
	for i := range o.items {
		if o.items[i].status == "" {
			o.close(i, st)
		}
	}
}

// terminal closes what is open and appends response.completed or
// response.incomplete.
func (o *output) terminal() {
	o.closeAll()
	if o.ev == nil {
		return
	}
	st, reason := o.status()
	typ := typeCompleted
	if st == statusIncomplete {
		typ = typeIncomplete
	}
	b := o.ev.begin(typ, o.next())
	b = append(b, `,"response":`...)
	b = o.appendObject(b, st, reason, &o.items)
	o.ev.finish(b, typ)
}

// failed appends response.failed with the output so far.
func (o *output) failed(code, message string) {
	b := o.ev.begin(typeFailed, o.next())
	b = append(b, `,"response":`...)
	b = o.appendFailed(b, code, message)
	o.ev.finish(b, typeFailed)
}

func (o *output) setUsage(u gjson.Result) {
	o.usage = event.NewUsage(u.Get("prompt_tokens").Int(), u.Get("prompt_tokens_details.cached_tokens").Int(),
		u.Get("completion_tokens").Int(), u.Get("completion_tokens_details.reasoning_tokens").Int(), u.Get("total_tokens").Int())
}
