package relay

import (
	"bytes"
	"strconv"
	"strings"
	"unsafe"

	"github.com/relaykit/responsesrelay/internal/jsonx"
	"github.com/tidwall/gjson"
)

// Request is a validated Responses request body and the fields the relay
// routes on.
type request struct {
	Body               []byte // the body as received; sent upstream unchanged
	Model              string
	Stream             bool
	PreviousResponseID string
	promptCacheKey     string
	noStore            bool   // "store": false
	background         bool   // "background": true
	conversation       string // "conversation": its id (a string, or an object's "id")
	items              itemKinds
}

// messageIDPrefixes are id shapes of items, not responses; clients that send
// one as previous_response_id get a hint instead of an opaque upstream 400.
var messageIDPrefixes = []string{"msg_", "message_", "item_", "chatcmpl_", "fc_", "rs_"}

// parseRequest validates a request body (a POST body, or a WebSocket
// response.create with its "type" already accepted) before any slot is
// taken. Its error is the 400 the client sees as is.
//
// A body nested deeper than 512 levels is refused before any recursive
// parser sees it, and so is one whose top-level object repeats a key the
// relay reads or rewrites: the relay and the upstream could each take a
// different copy.
func parseRequest(body []byte) (*request, *APIError) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, errInvalid("Request body is empty", "")
	}
	// One pass checks the depth and collects the top-level members.
	m := members{dup: -1}
	if jsonx.Members(body, jsonx.MaxDepth, m.add) {
		return nil, errInvalid(tooDeep, "")
	}
	if !gjson.ValidBytes(body) {
		return nil, errInvalid("Failed to parse request body", "")
	}
	if !gjson.Parse(unsafe.String(unsafe.SliceData(body), len(body))).IsObject() {
		return nil, errInvalid("Failed to parse request body", "")
	}
	if m.dup >= 0 {
		k := routedKeys[m.dup]
		return nil, errInvalid("duplicate key "+strconv.Quote(k)+" in the request body: send it once", k)
	}
	model, stream, prev, cacheKey, input := m.get(keyModel), m.get(keyStream), m.get(keyPrev), m.get(keyCacheKey), m.get(keyInput)
	q := &request{Body: body}
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
	q.noStore = m.get(keyStore).Type == gjson.False
	q.background = m.get(keyBackground).Type == gjson.True
	switch c := m.get(keyConversation); {
	case c.Type == gjson.String:
		q.conversation = strings.Clone(c.Str)
	case c.IsObject():
		q.conversation = strings.Clone(c.Get("id").Str)
	}
	if cacheKey.Type == gjson.String {
		q.promptCacheKey = strings.Clone(cacheKey.Str)
	}
	if input.IsArray() {
		q.items = scanItemKinds(m.vals[keyInput])
	}
	// Most turns carry no tool output: the scan spares them the walk over
	// every input item.
	if q.items.toolOutput {
		if e := checkToolOutputs(input, q.PreviousResponseID != ""); e != nil {
			return nil, e
		}
	}
	return q, nil
}

// tooDeep answers a body nested deeper than jsonx.MaxDepth.
var tooDeep = "JSON nested deeper than " + strconv.Itoa(jsonx.MaxDepth) + " levels"

// routedKeys are the top-level keys the relay reads or rewrites (type: a
// WebSocket message's); a request may carry each once.
var routedKeys = [...]string{"model", "stream", "store", "previous_response_id", "input", "background", "conversation", "prompt_cache_key", "type"}

const (
	keyModel = iota
	keyStream
	keyStore
	keyPrev
	keyInput
	keyBackground
	keyConversation
	keyCacheKey
	keyType
)

// members holds the routed keys' values as jsonx.Members finds them, and
// the first routed key seen twice.
type members struct {
	vals [len(routedKeys)][]byte
	seen uint16
	dup  int8 // index into routedKeys, or -1
}

func (m *members) add(key, value []byte) {
	if bytes.IndexByte(key, '\\') >= 0 {
		// An escaped spelling names the same key: decode it (rare).
		key = []byte(gjson.Parse(`"` + string(key) + `"`).Str)
	}
	i := routedKey(key)
	if i < 0 {
		return
	}
	if m.seen&(1<<i) != 0 {
		if m.dup < 0 {
			m.dup = int8(i)
		}
		return
	}
	m.seen |= 1 << i
	m.vals[i] = value
}

func routedKey(key []byte) int {
	switch string(key) {
	case "model":
		return keyModel
	case "stream":
		return keyStream
	case "store":
		return keyStore
	case "previous_response_id":
		return keyPrev
	case "input":
		return keyInput
	case "background":
		return keyBackground
	case "conversation":
		return keyConversation
	case "prompt_cache_key":
		return keyCacheKey
	case "type":
		return keyType
	}
	return -1
}

// get parses key's value in place (the body is validated by then); a
// missing key is gjson's zero Result, as Get would return.
func (m *members) get(key int) gjson.Result {
	v := m.vals[key]
	if v == nil {
		return gjson.Result{}
	}
	return gjson.Parse(unsafe.String(unsafe.SliceData(v), len(v)))
}

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
