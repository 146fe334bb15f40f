package chat

import (
	"strconv"

	"github.com/relaykit/responsesrelay/internal/jsonx"
	"github.com/tidwall/gjson"
)

// Request maps a validated Responses create body to a Chat Completions body
// for model (the account's upstream name; "" keeps the body's model). It
// returns an *UnsupportedError for anything without a Chat form.
//
// Top-level fields with no Chat equivalent are dropped on purpose:
//   - store, previous_response_id, conversation state: the relay keeps the
//     conversation and has already expanded previous_response_id into input;
//   - background: the relay runs background turns itself;
//   - include, prompt_cache_key, metadata, client_metadata, service_tier,
//     truncation, safety_identifier, top_logprobs, max_tool_calls,
//     stream_options, context_management, generate: Responses-only controls
//     a Chat upstream would reject or ignore;
//   - reasoning.summary and text.verbosity: no portable Chat form.
//
// Refused instead of dropped, because dropping would change the answer:
// prompt (a stored prompt template) and conversation (server-side state).
func Request(body []byte, model string) ([]byte, error) {
	if jsonx.DepthExceeds(body, jsonx.MaxDepth) || !gjson.ValidBytes(body) {
		return nil, &UnsupportedError{What: "a body that is not JSON"}
	}
	root := gjson.ParseBytes(body)
	if !root.IsObject() {
		return nil, &UnsupportedError{What: "a body that is not a JSON object"}
	}
	for _, k := range [...]string{"prompt", "conversation"} {
		if v := root.Get(k); v.Exists() && v.Type != gjson.Null {
			return nil, &UnsupportedError{What: strconv.Quote(k), Param: k}
		}
	}
	if model == "" {
		model = root.Get("model").String()
	}
	b := make([]byte, 0, len(body)+128)
	b = append(b, `{"model":`...)
	b = jsonx.AppendString(b, model)
	b = append(b, `,"messages":[`...)
	var err error
	if b, err = appendMessages(b, root); err != nil {
		return nil, err
	}
	b = append(b, ']')
	if b, err = appendTools(b, root); err != nil {
		return nil, err
	}
	if b, err = appendFormat(b, root.Get("text.format")); err != nil {
		return nil, err
	}
	if v := root.Get("reasoning.effort"); v.Type == gjson.String && v.Str != "" {
		b = append(b, `,"reasoning_effort":`...)
		b = jsonx.AppendString(b, v.Str)
	}
	b = appendRaw(b, "max_completion_tokens", root.Get("max_output_tokens"), gjson.Number)
	b = appendRaw(b, "temperature", root.Get("temperature"), gjson.Number)
	b = appendRaw(b, "top_p", root.Get("top_p"), gjson.Number)
	b = appendRaw(b, "user", root.Get("user"), gjson.String)
	if root.Get("stream").Type == gjson.True {
		// Without include_usage a Chat stream carries no usage at all, and
		// the relay could not bill the turn.
		b = append(b, `,"stream":true,"stream_options":{"include_usage":true}`...)
	}
	return append(b, '}'), nil
}

// appendRaw appends "key":value when v has type t, copying the value as
// written in the request.
func appendRaw(b []byte, key string, v gjson.Result, t gjson.Type) []byte {
	if v.Type != t {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, key...)
	b = append(b, '"', ':')
	return append(b, v.Raw...)
}

func appendTools(b []byte, root gjson.Result) ([]byte, error) {
	if tools := root.Get("tools"); tools.IsArray() && len(tools.Array()) > 0 {
		b = append(b, `,"tools":[`...)
		for i, t := range tools.Array() {
			typ := t.Get("type").String()
			if typ != "function" {
				return nil, &UnsupportedError{What: "tool type " + strconv.Quote(typ), Param: "tools[" + strconv.Itoa(i) + "]"}
			}
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"type":"function","function":{"name":`...)
			b = jsonx.AppendString(b, t.Get("name").String())
			if d := t.Get("description"); d.Type == gjson.String {
				b = append(b, `,"description":`...)
				b = append(b, d.Raw...)
			}
			if p := t.Get("parameters"); p.IsObject() {
				b = append(b, `,"parameters":`...)
				b = append(b, p.Raw...)
			}
			if s := t.Get("strict"); s.IsBool() {
				b = append(b, `,"strict":`...)
				b = append(b, s.Raw...)
			}
			b = append(b, `}}`...)
		}
		b = append(b, ']')
	}
	if c := root.Get("tool_choice"); c.Exists() && c.Type != gjson.Null {
		var err error
		if b, err = appendToolChoice(b, c); err != nil {
			return nil, err
		}
	}
	if p := root.Get("parallel_tool_calls"); p.IsBool() {
		b = append(b, `,"parallel_tool_calls":`...)
		b = append(b, p.Raw...)
	}
	return b, nil
}

func appendToolChoice(b []byte, c gjson.Result) ([]byte, error) {
	b = append(b, `,"tool_choice":`...)
	if c.Type == gjson.String {
		switch c.Str {
		case "auto", "none", "required":
			return jsonx.AppendString(b, c.Str), nil
		}
		return nil, &UnsupportedError{What: "tool_choice " + strconv.Quote(c.Str), Param: "tool_choice"}
	}
	typ := c.Get("type").String()
	if typ != "function" {
		return nil, &UnsupportedError{What: "tool_choice type " + strconv.Quote(typ), Param: "tool_choice"}
	}
	b = append(b, `{"type":"function","function":{"name":`...)
	b = jsonx.AppendString(b, c.Get("name").String())
	return append(b, `}}`...), nil
}

// appendFormat maps text.format to response_format. "text" is the Chat
// default and is left out.
func appendFormat(b []byte, f gjson.Result) ([]byte, error) {
	if !f.Exists() || f.Type == gjson.Null {
		return b, nil
	}
	switch typ := f.Get("type").String(); typ {
	case "text":
		return b, nil
	case "json_object":
		return append(b, `,"response_format":{"type":"json_object"}`...), nil
	case "json_schema":
		b = append(b, `,"response_format":{"type":"json_schema","json_schema":{"name":`...)
		b = jsonx.AppendString(b, f.Get("name").String())
		if d := f.Get("description"); d.Type == gjson.String {
			b = append(b, `,"description":`...)
			b = append(b, d.Raw...)
		}
		if s := f.Get("schema"); s.IsObject() {
			b = append(b, `,"schema":`...)
			b = append(b, s.Raw...)
		}
		if s := f.Get("strict"); s.IsBool() {
			b = append(b, `,"strict":`...)
			b = append(b, s.Raw...)
		}
		return append(b, `}}`...), nil
	default:
		return nil, &UnsupportedError{What: "text.format type " + strconv.Quote(typ), Param: "text.format"}
	}
}
