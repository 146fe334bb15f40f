package chat

import (
	"strconv"

	"github.com/relaykit/responsesrelay/internal/jsonx"
	"github.com/tidwall/gjson"
)

// msgWriter appends Chat messages. Chat carries a model turn's text and
// its function calls in one assistant message, and upstreams require every
// call answered by a tool message after the message that made it: so an
// assistant message stays open for the calls that follow it, and a run of
// calls shares one message.
type msgWriter struct {
	b    []byte
	n    int
	open uint8 // openAssistant or openCalls: the last message is unfinished
}

const (
	openAssistant = 1 + iota // an assistant message without its closing brace
	openCalls                // inside an assistant message's tool_calls
)

// start begins a message, finishing an open one.
func (w *msgWriter) start() {
	w.end()
	if w.n > 0 {
		w.b = append(w.b, ',')
	}
	w.n++
}

func (w *msgWriter) end() {
	switch w.open {
	case openAssistant:
		w.b = append(w.b, '}')
	case openCalls:
		w.b = append(w.b, "]}"...)
	}
	w.open = 0
}

// close ends a message of role: an assistant's stays open for calls.
func (w *msgWriter) close(role string) {
	if role == "assistant" {
		w.open = openAssistant
		return
	}
	w.b = append(w.b, '}')
}

func (w *msgWriter) call(callID, name, args string) {
	switch w.open {
	case openCalls:
		w.b = append(w.b, ',')
	case openAssistant:
		w.b = append(w.b, `,"tool_calls":[`...)
	default:
		w.start()
		w.b = append(w.b, `{"role":"assistant","content":null,"tool_calls":[`...)
	}
	w.open = openCalls
	w.b = append(w.b, `{"id":`...)
	w.b = jsonx.AppendString(w.b, callID)
	w.b = append(w.b, `,"type":"function","function":{"name":`...)
	w.b = jsonx.AppendString(w.b, name)
	w.b = append(w.b, `,"arguments":`...)
	w.b = jsonx.AppendString(w.b, args)
	w.b = append(w.b, "}}"...)
}

func (w *msgWriter) text(role, text string) {
	w.start()
	w.b = append(w.b, `{"role":"`...)
	w.b = append(w.b, role...)
	w.b = append(w.b, `","content":`...)
	w.b = jsonx.AppendString(w.b, text)
	w.close(role)
}

// appendMessages appends the messages of instructions and input.
func appendMessages(b []byte, root gjson.Result) ([]byte, error) {
	w := msgWriter{b: b}
	if ins := root.Get("instructions"); ins.Type == gjson.String && ins.Str != "" {
		w.text("system", ins.Str)
	}
	in := root.Get("input")
	switch {
	case in.Type == gjson.String:
		w.text("user", in.Str)
	case in.IsArray():
		for i, it := range in.Array() {
			if err := w.item(it, i); err != nil {
				return nil, err
			}
		}
	case in.Exists() && in.Type != gjson.Null:
		return nil, &UnsupportedError{What: "input that is neither a string nor an array", Param: "input"}
	}
	w.end()
	return w.b, nil
}

func (w *msgWriter) item(it gjson.Result, i int) error {
	param := "input[" + strconv.Itoa(i) + "]"
	typ := it.Get("type").String()
	if typ == "" && it.Get("role").Exists() {
		typ = "message"
	}
	switch typ {
	case "message":
		return w.message(it, param)
	case "function_call":
		w.call(it.Get("call_id").String(), it.Get("name").String(), it.Get("arguments").String())
	case "function_call_output":
		out, err := outputText(it.Get("output"), param+".output")
		if err != nil {
			return err
		}
		w.start()
		w.b = append(w.b, `{"role":"tool","tool_call_id":`...)
		w.b = jsonx.AppendString(w.b, it.Get("call_id").String())
		w.b = append(w.b, `,"content":`...)
		w.b = jsonx.AppendString(w.b, out)
		w.b = append(w.b, '}')
	case "reasoning":
		// Reasoning is the upstream's own state; a Chat upstream takes none
		// back. Skipping it keeps a run of function calls together.
	default:
		return &UnsupportedError{What: "input item type " + strconv.Quote(typ), Param: param}
	}
	return nil
}

func (w *msgWriter) message(it gjson.Result, param string) error {
	role := it.Get("role").String()
	switch role {
	case "user", "system", "assistant":
	case "developer":
		// Many Chat servers know only system; for the rest the two mean
		// the same.
		role = "system"
	default:
		return &UnsupportedError{What: "message role " + strconv.Quote(role), Param: param + ".role"}
	}
	c := it.Get("content")
	if !c.IsArray() {
		w.text(role, c.String())
		return nil
	}
	parts := c.Array()
	switch {
	case len(parts) == 0:
		w.text(role, "") // servers refuse an empty parts array
		return nil
	case len(parts) == 1 && isText(parts[0]):
		w.text(role, partText(parts[0]))
		return nil
	}
	w.start()
	w.b = append(w.b, `{"role":"`...)
	w.b = append(w.b, role...)
	w.b = append(w.b, `","content":[`...)
	for j, p := range parts {
		if j > 0 {
			w.b = append(w.b, ',')
		}
		pp := param + ".content[" + strconv.Itoa(j) + "]"
		typ := p.Get("type").String()
		switch {
		case isText(p):
			w.b = append(w.b, `{"type":"text","text":`...)
			w.b = jsonx.AppendString(w.b, partText(p))
			w.b = append(w.b, '}')
		case typ == "input_image" && role == "user":
			url := p.Get("image_url")
			if url.Type != gjson.String || url.Str == "" {
				return &UnsupportedError{What: "input_image without image_url", Param: pp}
			}
			w.b = append(w.b, `{"type":"image_url","image_url":{"url":`...)
			w.b = jsonx.AppendString(w.b, url.Str)
			if d := p.Get("detail"); d.Type == gjson.String && d.Str != "" {
				w.b = append(w.b, `,"detail":`...)
				w.b = jsonx.AppendString(w.b, d.Str)
			}
			w.b = append(w.b, "}}"...)
		default:
			return &UnsupportedError{What: "content part " + strconv.Quote(typ) + " in a message of role " + strconv.Quote(role), Param: pp}
		}
	}
	w.b = append(w.b, ']')
	w.close(role)
	return nil
}

// isText reports a part that maps to a Chat text part. A refusal the model
// gave earlier is replayed as the assistant's text: Chat has no refusal
// part in requests.
func isText(p gjson.Result) bool {
	switch p.Get("type").String() {
	case "input_text", "output_text", "text", "refusal":
		return true
	}
	return false
}

func partText(p gjson.Result) string {
	if p.Get("type").String() == "refusal" {
		return p.Get("refusal").String()
	}
	return p.Get("text").String()
}

// outputText is a function_call_output's output: a string, or text parts
// joined (a tool message's content is text only).
func outputText(out gjson.Result, param string) (string, error) {
	if !out.IsArray() {
		return out.String(), nil
	}
	var s []byte
	for j, p := range out.Array() {
		if !isText(p) {
			return "", &UnsupportedError{What: "function_call_output part " + strconv.Quote(p.Get("type").String()),
				Param: param + "[" + strconv.Itoa(j) + "]"}
		}
		s = append(s, partText(p)...)
	}
	return string(s), nil
}
