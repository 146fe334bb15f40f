package relaytest

import (
	"bytes"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/relaykit/responsesrelay/internal/jsonx"
	"github.com/tidwall/gjson"
)

// request is what the fake reads from a response.create body.
type request struct {
	model          string
	stream         bool
	store          bool
	warmup         bool // WebSocket generate:false: a response without output
	background     bool
	input          string // raw input value, for input_items and compaction
	size           int    // length of the body, which the strings above keep alive
	prevID         string
	fnName         string // first function tool, "" when none
	hasReasoning   bool
	encReasoning   bool // include asks for reasoning.encrypted_content
	compact        bool // the last input item is a compaction_trigger
	sealed         []sealedItem
	serviceTier    string
	lastUserText   string
	lastKind       itemKind
	lastOutput     string   // output of the last item when it is a function_call_output
	words          int64    // whitespace-separated words of instructions and input
	calls          []string // call_ids of function_call items in the input
	outputs        []string // call_ids of function_call_output items in the input
	refs           []string // item_reference ids
	instructions   string   // raw JSON values echoed into the response object
	maxOutput      string
	metadata       string
	promptCacheKey string
	effort         string
	summary        string
	temperature    string
	toolChoice     string
	tools          string
	topP           string
	truncation     string
}

type itemKind uint8

const (
	itemNone itemKind = iota
	itemMessage
	itemUserMessage
	itemFunctionCall
	itemFunctionOutput
	itemOther
)

// parseRequest validates body the way the Responses API does for the fields
// the fake understands. The error is ready to be sent.
func parseRequest(body []byte) (*request, *apiError) {
	// The depth first: gjson validates recursively.
	if len(bytes.TrimSpace(body)) == 0 || jsonx.DepthExceeds(body, jsonx.MaxDepth) || !gjson.ValidBytes(body) {
		return nil, errInvalidJSON
	}
	root := gjson.ParseBytes(body)
	if !root.IsObject() {
		return nil, errInvalidJSON
	}
	q := &request{store: true, size: len(body)}
	var input gjson.Result
	var modelSeen bool
	var bad *apiError
	root.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "model":
			modelSeen = true
			if v.Type != gjson.String {
				bad = invalidType("model", "a string", v)
				return false
			}
			q.model = v.Str
		case "stream":
			if !isBool(v) {
				bad = invalidType("stream", "a boolean", v)
				return false
			}
			q.stream = v.Type == gjson.True
		case "store":
			if !isBool(v) {
				bad = invalidType("store", "a boolean", v)
				return false
			}
			q.store = v.Type == gjson.True
		case "background":
			switch {
			case v.Type == gjson.Null:
			case !isBool(v):
				bad = invalidType("background", "a boolean", v)
				return false
			default:
				q.background = v.Type == gjson.True
			}
		case "previous_response_id":
			switch v.Type {
			case gjson.Null:
			case gjson.String:
				q.prevID = v.Str
			default:
				bad = invalidType("previous_response_id", "a string", v)
				return false
			}
		case "input":
			switch v.Type {
			case gjson.Null, gjson.String:
			default:
				if !v.IsArray() {
					bad = invalidType("input", "a string or an array", v)
					return false
				}
			}
			input = v
			q.input = v.Raw
		case "instructions":
			q.instructions = compactJSON(v.Raw)
			q.words += countWords(v.String())
		case "tools":
			q.tools = compactJSON(v.Raw)
			v.ForEach(func(_, t gjson.Result) bool {
				if t.Get("type").String() != "function" {
					return true
				}
				name := t.Get("name").String()
				if name == "" {
					name = t.Get("function.name").String() // Chat Completions shape
				}
				q.fnName = name
				return name == ""
			})
		case "reasoning":
			if v.IsObject() {
				q.hasReasoning = true
				q.effort = compactJSON(v.Get("effort").Raw)
				q.summary = compactJSON(v.Get("summary").Raw)
			}
		case "include":
			v.ForEach(func(_, inc gjson.Result) bool {
				q.encReasoning = inc.Type == gjson.String && inc.Str == includeEncrypted
				return !q.encReasoning
			})
		case "service_tier":
			q.serviceTier = v.String()
		case "max_output_tokens":
			q.maxOutput = compactJSON(v.Raw)
		case "metadata":
			if v.IsObject() {
				q.metadata = compactJSON(v.Raw)
			}
		case "prompt_cache_key":
			q.promptCacheKey = compactJSON(v.Raw)
		case "temperature":
			q.temperature = compactJSON(v.Raw)
		case "tool_choice":
			q.toolChoice = compactJSON(v.Raw)
		case "top_p":
			q.topP = compactJSON(v.Raw)
		case "truncation":
			q.truncation = compactJSON(v.Raw)
		}
		return true
	})
	if bad != nil {
		return nil, bad
	}
	if !modelSeen || q.model == "" {
		return nil, &apiError{status: 400, typ: typeInvalidRequest, param: "model", code: "missing_required_parameter",
			msg: "Missing required parameter: 'model'."}
	}
	if q.background && !q.store {
		return nil, &apiError{status: 400, typ: typeInvalidRequest, param: "background",
			msg: "Background mode requires 'store' to be true."}
	}
	if err := q.readInput(input); err != nil {
		return nil, err
	}
	if q.serviceTier == "" || q.serviceTier == "auto" {
		q.serviceTier = "default"
	}
	return q, nil
}

func (q *request) readInput(input gjson.Result) *apiError {
	if input.Type == gjson.String {
		q.lastUserText = input.Str
		q.lastKind = itemUserMessage
		q.words += countWords(input.Str)
		return nil
	}
	var bad *apiError
	i, trigger := 0, -1
	input.ForEach(func(_, it gjson.Result) bool {
		typ := it.Get("type").String()
		role := it.Get("role")
		if typ == "" && role.Exists() {
			typ = "message"
		}
		switch typ {
		case "message":
			text := contentText(it.Get("content"))
			q.words += countWords(text)
			q.lastKind = itemMessage
			if role.String() == "user" {
				q.lastUserText = text
				q.lastKind = itemUserMessage
			}
		case "function_call":
			q.calls = append(q.calls, it.Get("call_id").String())
			q.words += countWords(it.Get("arguments").String())
			q.lastKind = itemFunctionCall
		case "function_call_output":
			id := it.Get("call_id").String()
			if id == "" {
				p := "input[" + strconv.Itoa(i) + "].call_id"
				bad = &apiError{status: 400, typ: typeInvalidRequest, param: p, code: "missing_required_parameter",
					msg: "Missing required parameter: '" + p + "'."}
				return false
			}
			out := it.Get("output")
			text := out.String()
			if out.Type != gjson.String {
				text = contentText(out)
			}
			q.outputs = append(q.outputs, id)
			q.words += countWords(text)
			q.lastKind = itemFunctionOutput
			q.lastOutput = text
		case "item_reference":
			q.refs = append(q.refs, it.Get("id").String())
			q.lastKind = itemOther
		case "reasoning", "compaction":
			q.sealed = append(q.sealed, readSealed(typ, it))
			q.lastKind = itemOther
		case "compaction_trigger":
			if trigger < 0 {
				trigger = i
			}
			q.lastKind = itemOther
		default:
			q.lastKind = itemOther
		}
		i++
		return true
	})
	if bad == nil && trigger >= 0 {
		if trigger != i-1 {
			return misplacedTrigger(trigger)
		}
		q.compact = true
	}
	return bad
}

// contentText joins the text parts of a message's content.
func contentText(c gjson.Result) string {
	if c.Type == gjson.String {
		return c.Str
	}
	var sb strings.Builder
	c.ForEach(func(_, part gjson.Result) bool {
		if t := part.Get("text"); t.Type == gjson.String {
			if sb.Len() > 0 {
				sb.WriteByte(' ')
			}
			sb.WriteString(t.Str)
		}
		return true
	})
	return sb.String()
}

func countWords(s string) int64 {
	var n int64
	in := false
	for _, r := range s {
		if unicode.IsSpace(r) {
			in = false
		} else if !in {
			in = true
			n++
		}
	}
	return n
}

func isBool(v gjson.Result) bool { return v.Type == gjson.True || v.Type == gjson.False }

func invalidType(param, want string, got gjson.Result) *apiError {
	return &apiError{status: 400, typ: typeInvalidRequest, param: param, code: "invalid_type",
		msg: "Invalid type for '" + param + "': expected " + want + ", but got " + jsonTypeName(got) + " instead."}
}

func jsonTypeName(v gjson.Result) string {
	switch {
	case v.Type == gjson.String:
		return "a string"
	case v.Type == gjson.Number:
		return "a number"
	case isBool(v):
		return "a boolean"
	case v.Type == gjson.Null:
		return "null"
	case v.IsArray():
		return "an array"
	default:
		return "an object"
	}
}

// splitRunes returns n+1 byte offsets cutting s into n pieces of about the
// same number of runes, never inside a rune. s must have at least n runes.
func splitRunes(s string, n int) []int {
	cuts := make([]int, n+1)
	total := utf8.RuneCountInString(s)
	r, next := 0, 1
	for i := range s {
		for next < n && r == next*total/n {
			cuts[next] = i
			next++
		}
		r++
	}
	cuts[n] = len(s)
	return cuts
}
