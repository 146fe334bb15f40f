package relaytest

import (
	"bytes"
	"strconv"
	"strings"

	"github.com/relaykit/responsesrelay/internal/jsonx"
	"github.com/tidwall/gjson"
)

// The Chat Completions route: POST /chat/completions. The request is read
// into the same request the Responses path answers, so both paths decide
// their answers and usage with the same rules.

const pathChat = "/chat/completions"

// chatRequest is what the fake reads from a chat completion body.
type chatRequest struct {
	request
	includeUsage bool   // stream_options.include_usage
	noObfuscate  bool   // stream_options.include_obfuscation false
	maxTokens    int64  // max_completion_tokens, else max_tokens; 0: none
	jsonOut      bool   // response_format json_schema or json_object
	noCall       bool   // tool_choice "none"
	forced       string // tool_choice names this function
}

// Roles and content part types the real API accepts, in its own order.
var (
	chatRoles      = []string{"system", "assistant", "user", "tool", "developer"}
	chatUserParts  = []string{"text", "image_url", "input_audio", "file"}
	chatAsstParts  = []string{"text", "refusal"}
	chatTextParts  = []string{"text"}
	chatEfforts    = []string{"none", "minimal", "low", "medium", "high", "xhigh"}
	chatFormats    = []string{"text", "json_object", "json_schema"}
	chatToolTypes  = []string{"function", "custom"}
	errChatNoModel = &apiError{status: 400, typ: typeInvalidRequest, msg: "you must provide a model parameter"}
)

// parseChat validates body the way the Chat Completions API does for the
// fields the fake understands.
func parseChat(body []byte) (*chatRequest, *apiError) {
	if len(bytes.TrimSpace(body)) == 0 || jsonx.DepthExceeds(body, jsonx.MaxDepth) || !gjson.ValidBytes(body) {
		return nil, errInvalidJSON
	}
	root := gjson.ParseBytes(body)
	if !root.IsObject() {
		return nil, errInvalidJSON
	}
	c := &chatRequest{}
	q := &c.request
	var msgs, opts gjson.Result
	var bad *apiError
	root.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "model":
			if v.Type != gjson.String {
				bad = invalidType("model", "a string", v)
			}
			q.model = v.Str
		case "messages":
			if !v.IsArray() {
				bad = invalidType("messages", "an array", v)
			}
			msgs = v
		case "stream":
			switch {
			case v.Type == gjson.Null:
			case !isBool(v):
				bad = invalidType("stream", "a boolean", v)
			default:
				q.stream = v.Type == gjson.True
			}
		case "stream_options":
			if v.Type != gjson.Null && !v.IsObject() {
				bad = invalidType("stream_options", "an object", v)
			}
			opts = v
		case "tools":
			bad = c.readTools(v)
		case "tool_choice":
			c.readToolChoice(v)
		case "max_completion_tokens", "max_tokens":
			bad = c.readMax(k.Str, v)
		case "reasoning_effort":
			switch {
			case v.Type == gjson.Null:
			case v.Type != gjson.String:
				bad = invalidType("reasoning_effort", "a string", v)
			default:
				bad = oneOf("reasoning_effort", v.Str, chatEfforts)
				q.hasReasoning = v.Str != "none"
			}
		case "response_format":
			bad = c.readFormat(v)
		case "service_tier":
			q.serviceTier = v.String()
		}
		return bad == nil
	})
	switch {
	case bad != nil:
		return nil, bad
	case q.model == "":
		return nil, errChatNoModel
	case !msgs.Exists():
		return nil, &apiError{status: 400, typ: typeInvalidRequest, param: "messages", code: "missing_required_parameter",
			msg: "Missing required parameter: 'messages'."}
	case len(msgs.Array()) == 0:
		return nil, &apiError{status: 400, typ: typeInvalidRequest, param: "messages", code: "empty_array",
			msg: "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead."}
	}
	if e := c.readMessages(msgs); e != nil {
		return nil, e
	}
	if opts.IsObject() {
		if !q.stream {
			return nil, &apiError{status: 400, typ: typeInvalidRequest, param: "stream_options",
				msg: "The 'stream_options' parameter is only allowed when 'stream' is enabled."}
		}
		c.includeUsage = opts.Get("include_usage").Type == gjson.True
		c.noObfuscate = opts.Get("include_obfuscation").Type == gjson.False
	}
	switch {
	case c.noCall:
		q.fnName = ""
	case c.forced != "" && q.fnName != "":
		q.fnName = c.forced
	}
	if q.serviceTier == "" || q.serviceTier == "auto" {
		q.serviceTier = "default"
	}
	return c, nil
}

// readTools checks the tools' shape and keeps the first function's name.
func (c *chatRequest) readTools(v gjson.Result) *apiError {
	if v.Type == gjson.Null {
		return nil
	}
	if !v.IsArray() {
		return invalidType("tools", "an array", v)
	}
	var bad *apiError
	i := 0
	v.ForEach(func(_, t gjson.Result) bool {
		p := "tools[" + strconv.Itoa(i) + "]"
		i++
		typ := t.Get("type")
		if bad = oneOf(p+".type", typ.String(), chatToolTypes); bad != nil {
			return false
		}
		if typ.Str != "function" {
			return true
		}
		name := t.Get("function.name")
		if !t.Get("function").IsObject() || name.Type != gjson.String {
			// The flat Responses shape ends here.
			p += ".function"
			if t.Get("function").IsObject() {
				p += ".name"
			}
			bad = missing(p)
			return false
		}
		if c.fnName == "" {
			c.fnName = name.Str
		}
		return true
	})
	return bad
}

// readToolChoice applies "none" (no call) and a named function (that
// function is called).
func (c *chatRequest) readToolChoice(v gjson.Result) {
	if v.Type == gjson.String && v.Str == "none" {
		c.noCall = true
	} else if name := v.Get("function.name"); name.Type == gjson.String {
		c.forced = name.Str
	}
}

// readMax reads max_completion_tokens or max_tokens; the first wins.
func (c *chatRequest) readMax(param string, v gjson.Result) *apiError {
	if v.Type == gjson.Null {
		return nil
	}
	n, err := strconv.ParseInt(v.Raw, 10, 64)
	if v.Type != gjson.Number || err != nil {
		return invalidType(param, "an integer", v)
	}
	if n < 1 {
		return &apiError{status: 400, typ: typeInvalidRequest, param: param, code: "integer_below_min_value",
			msg: "Invalid '" + param + "': integer below minimum value. Expected a value >= 1, but got " + v.Raw + " instead."}
	}
	if c.maxTokens == 0 || param == "max_completion_tokens" {
		c.maxTokens = n
	}
	return nil
}

// readFormat reads response_format.
func (c *chatRequest) readFormat(v gjson.Result) *apiError {
	if v.Type == gjson.Null {
		return nil
	}
	if !v.IsObject() {
		return invalidType("response_format", "an object", v)
	}
	typ := v.Get("type").String()
	if e := oneOf("response_format.type", typ, chatFormats); e != nil {
		return e
	}
	if typ == "json_schema" && !v.Get("json_schema").IsObject() {
		// The flat text.format shape of the Responses API ends here.
		return missing("response_format.json_schema")
	}
	c.jsonOut = typ != "text"
	return nil
}

// readMessages validates the messages and their tool call pairing, and
// reads what the answer and the usage depend on.
func (c *chatRequest) readMessages(msgs gjson.Result) *apiError {
	q := &c.request
	var (
		bad     *apiError
		window  []string // ids of the tool calls the next tool messages may answer
		pending []string // those not answered yet
		callAt  int      // index of the assistant message that made them
	)
	unanswered := func() *apiError {
		return &apiError{status: 400, typ: typeInvalidRequest, param: "messages.[" + strconv.Itoa(callAt) + "].role",
			msg: "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. " +
				"The following tool_call_ids did not have response messages: " + strings.Join(pending, ", ")}
	}
	i := 0
	msgs.ForEach(func(_, m gjson.Result) bool {
		p := "messages[" + strconv.Itoa(i) + "]"
		role, calls, e := checkChatMessage(p, m)
		if e != nil {
			bad = e
			return false
		}
		if role != "tool" {
			if len(pending) > 0 {
				bad = unanswered()
				return false
			}
			window = nil
		}
		text := contentText(m.Get("content"))
		q.words += countWords(text)
		switch role {
		case "user":
			q.lastKind, q.lastUserText = itemUserMessage, text
		case "tool":
			id := m.Get("tool_call_id").Str
			at := -1
			for j, w := range window {
				if w == id {
					at = j
				}
			}
			if at < 0 {
				bad = &apiError{status: 400, typ: typeInvalidRequest, param: "messages.[" + strconv.Itoa(i) + "].role",
					msg: "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'."}
				return false
			}
			if j := indexOf(pending, id); j >= 0 {
				pending = append(pending[:j], pending[j+1:]...)
			}
			q.lastKind, q.lastOutput = itemFunctionOutput, text
		default:
			q.lastKind = itemMessage
		}
		if len(calls) > 0 {
			window, pending, callAt = calls, append([]string(nil), calls...), i
			m.Get("tool_calls").ForEach(func(_, tc gjson.Result) bool {
				q.words += countWords(tc.Get("function.arguments").String())
				return true
			})
		}
		i++
		return true
	})
	if bad == nil && len(pending) > 0 {
		bad = unanswered()
	}
	return bad
}

// checkChatMessage validates message p and returns its role and the ids of its
// tool calls.
func checkChatMessage(p string, m gjson.Result) (role string, calls []string, bad *apiError) {
	if !m.IsObject() {
		return "", nil, invalidType(p, "an object", m)
	}
	r := m.Get("role")
	switch {
	case !r.Exists():
		return "", nil, missing(p + ".role")
	case r.Type != gjson.String:
		return "", nil, invalidType(p+".role", "a string", r)
	}
	if e := oneOf(p+".role", r.Str, chatRoles); e != nil {
		return "", nil, e
	}
	role = r.Str
	if tc := m.Get("tool_calls"); role == "assistant" && tc.Exists() && tc.Type != gjson.Null {
		if !tc.IsArray() {
			return "", nil, invalidType(p+".tool_calls", "an array", tc)
		}
		j := 0
		tc.ForEach(func(_, call gjson.Result) bool {
			cp := p + ".tool_calls[" + strconv.Itoa(j) + "]"
			j++
			switch {
			case call.Get("id").Type != gjson.String:
				bad = missing(cp + ".id")
			case call.Get("function.name").Type != gjson.String:
				bad = missing(cp + ".function")
			default:
				calls = append(calls, call.Get("id").Str)
			}
			return bad == nil
		})
		if bad != nil {
			return "", nil, bad
		}
	}
	if role == "tool" && m.Get("tool_call_id").Type != gjson.String {
		return "", nil, missing(p + ".tool_call_id")
	}
	content := m.Get("content")
	switch {
	case !content.Exists() || content.Type == gjson.Null:
		if role == "assistant" && len(calls) > 0 {
			return role, calls, nil
		}
		return "", nil, missing(p + ".content")
	case content.Type == gjson.String:
		return role, calls, nil
	case !content.IsArray():
		return "", nil, invalidType(p+".content", "one of a string or array of objects", content)
	}
	parts := chatTextParts
	switch role {
	case "user":
		parts = chatUserParts
	case "assistant":
		parts = chatAsstParts
	}
	j := 0
	content.ForEach(func(_, part gjson.Result) bool {
		pp := p + ".content[" + strconv.Itoa(j) + "]"
		j++
		if !part.IsObject() {
			bad = invalidType(pp, "an object", part)
		} else {
			bad = oneOf(pp+".type", part.Get("type").String(), parts)
		}
		return bad == nil
	})
	return role, calls, bad
}

// oneOf is nil when v is one of values, else the real API's invalid_value
// error for param.
func oneOf(param, v string, values []string) *apiError {
	if indexOf(values, v) >= 0 {
		return nil
	}
	var sb strings.Builder
	for i, s := range values {
		switch {
		case i == 0:
		case i == len(values)-1 && len(values) == 2:
			sb.WriteString(" and ")
		case i == len(values)-1:
			sb.WriteString(", and ")
		default:
			sb.WriteString(", ")
		}
		sb.WriteString("'" + s + "'")
	}
	return &apiError{status: 400, typ: typeInvalidRequest, param: param, code: "invalid_value",
		msg: "Invalid value: '" + v + "'. Supported values are: " + sb.String() + "."}
}

func missing(param string) *apiError {
	return &apiError{status: 400, typ: typeInvalidRequest, param: param, code: "missing_required_parameter",
		msg: "Missing required parameter: '" + param + "'."}
}

func indexOf(list []string, s string) int {
	for i, v := range list {
		if v == s {
			return i
		}
	}
	return -1
}
