package relay

import (
	"bytes"
	"strings"
	"unsafe"

	"github.com/tidwall/gjson"
)

// Request is a validated Responses request body and the fields the relay
// routes on.
type Request struct {
	Body               []byte // the body as received; sent upstream unchanged
	Model              string
	Stream             bool
	PreviousResponseID string
	PromptCacheKey     string
}

// messageIDPrefixes are id shapes of items, not responses; clients that send
// one as previous_response_id get a hint instead of an opaque upstream 400.
var messageIDPrefixes = []string{"msg_", "message_", "item_", "chatcmpl_", "fc_", "rs_"}

// ParseRequest validates a request body (a POST body, or a WebSocket
// response.create with its "type" already accepted) before any slot is
// taken. The error, when non-nil, is a 400 the client should see as is.
func ParseRequest(body []byte) (*Request, *APIError) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, errInvalid("Request body is empty", "")
	}
	if !gjson.ValidBytes(body) {
		return nil, errInvalid("Failed to parse request body", "")
	}
	// Parsed in place: gjson.ParseBytes would copy the whole body. The
	// strings kept in Request are cloned, so none of them aliases it.
	root := gjson.Parse(unsafe.String(unsafe.SliceData(body), len(body)))
	if !root.IsObject() {
		return nil, errInvalid("Failed to parse request body", "")
	}
	var model, stream, prev, cacheKey, input gjson.Result
	root.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "model":
			model = v
		case "stream":
			stream = v
		case "previous_response_id":
			prev = v
		case "prompt_cache_key":
			cacheKey = v
		case "input":
			input = v
		}
		return true
	})
	q := &Request{Body: body}
	if model.Type != gjson.String || model.Str == "" {
		return nil, errInvalid("model is required", "model")
	}
	q.Model = strings.Clone(model.Str)
	switch stream.Type {
	case gjson.True:
		q.Stream = true
	case gjson.False, gjson.Null: // absent, false, or null ("not set" in some SDKs)
	default:
		return nil, errInvalid("invalid stream field type", "stream")
	}
	if prev.Exists() && prev.Type != gjson.Null {
		if prev.Type != gjson.String {
			return nil, errInvalid("previous_response_id must be a string", "previous_response_id")
		}
		for _, p := range messageIDPrefixes {
			if strings.HasPrefix(prev.Str, p) {
				return nil, errInvalid("previous_response_id must be a response.id (resp_*), not a message id", "previous_response_id")
			}
		}
		q.PreviousResponseID = strings.Clone(prev.Str)
	}
	if cacheKey.Type == gjson.String {
		q.PromptCacheKey = strings.Clone(cacheKey.Str)
	}
	// Most turns carry no tool output: one substring scan spares them the
	// walk over every input item.
	if input.IsArray() && bytes.Contains(body, functionCallOutput) {
		if e := checkToolOutputs(input, q.PreviousResponseID != ""); e != nil {
			return nil, e
		}
	}
	return q, nil
}

var functionCallOutput = []byte("function_call_output")

// checkToolOutputs rejects function_call_output items the upstream could
// never match to a call, with guidance the client can act on.
func checkToolOutputs(input gjson.Result, hasPrev bool) *APIError {
	if hasPrev {
		return nil // the call may live in the previous response
	}
	var calls map[string]struct{}
	hasRef := false
	var outputs []gjson.Result
	input.ForEach(func(_, item gjson.Result) bool {
		switch item.Get("type").Str {
		case "function_call":
			if calls == nil {
				calls = make(map[string]struct{})
			}
			calls[item.Get("call_id").Str] = struct{}{}
		case "item_reference":
			hasRef = true
		case "function_call_output":
			outputs = append(outputs, item)
		}
		return true
	})
	for _, out := range outputs {
		id := out.Get("call_id")
		if id.Type != gjson.String || id.Str == "" {
			return errInvalid("function_call_output requires a call_id. Send the call_id of the function_call it answers, "+
				"and either include that function_call item in input or set previous_response_id to the response that made the call (which needs store=true).", "input")
		}
		if hasRef {
			continue
		}
		if _, ok := calls[id.Str]; !ok {
			return errInvalid("No tool call found for function call output with call_id "+id.Str+". Include the matching function_call item in input, "+
				"or set previous_response_id to the response that made the call (which needs store=true).", "input")
		}
	}
	return nil
}
