package relay

import (
	"time"

	"github.com/relaykit/responsesrelay/internal/event"
	"github.com/relaykit/responsesrelay/internal/jsonx"
	"github.com/tidwall/gjson"
)

// convRecord is what the relay keeps of one served turn
// (conversation.Store's record): the turn's input items (a string input
// is one user message), the response's output items, the response it
// continued, the account that served it, and the store flag.
type convRecord struct {
	responseID, apiKeyID, previousID, model, accountID string
	store                                              bool
	input, output                                      []byte // JSON arrays
	createdAt                                          time.Time
}

// encode writes the record as the JSON object conversation.Store
// documents, and points r's input and output into it. input and output
// are arrays the relay built or checked.
func (r *convRecord) encode() []byte {
	b := make([]byte, 0, 200+len(r.responseID)+len(r.apiKeyID)+len(r.previousID)+len(r.model)+len(r.accountID)+len(r.input)+len(r.output))
	b = append(b, `{"response_id":`...)
	b = jsonx.AppendString(b, r.responseID)
	b = append(b, `,"api_key_id":`...)
	b = jsonx.AppendString(b, r.apiKeyID)
	if r.previousID != "" {
		b = append(b, `,"previous_response_id":`...)
		b = jsonx.AppendString(b, r.previousID)
	}
	b = append(b, `,"model":`...)
	b = jsonx.AppendString(b, r.model)
	b = append(b, `,"account_id":`...)
	b = jsonx.AppendString(b, r.accountID)
	if r.store {
		b = append(b, `,"store":true`...)
	} else {
		b = append(b, `,"store":false`...)
	}
	b = append(b, `,"input":`...)
	in := len(b)
	b = append(b, r.input...)
	inEnd := len(b)
	b = append(b, `,"output":`...)
	out := len(b)
	b = append(b, r.output...)
	r.input, r.output = b[in:inEnd:inEnd], b[out:len(b):len(b)]
	b = append(b, `,"created_at":"`...)
	b = r.createdAt.UTC().AppendFormat(b, time.RFC3339Nano)
	return append(b, `"}`...)
}

// decodeRecord reads a record a Store gave back, as untrusted input: it
// must be a JSON object within the nesting bound, of apiKeyID and
// responseID, with input and output arrays. The slices point into b.
func decodeRecord(b []byte, apiKeyID, responseID string) (*convRecord, bool) {
	if !validJSON(b) {
		return nil, false
	}
	var f [9]gjson.Result
	doc := gjson.ParseBytes(b)
	if !doc.IsObject() {
		return nil, false
	}
	doc.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "response_id":
			f[0] = v
		case "api_key_id":
			f[1] = v
		case "previous_response_id":
			f[2] = v
		case "model":
			f[3] = v
		case "account_id":
			f[4] = v
		case "store":
			f[5] = v
		case "input":
			f[6] = v
		case "output":
			f[7] = v
		case "created_at":
			f[8] = v
		}
		return true
	})
	if f[0].Str != responseID || f[1].Str != apiKeyID || !f[6].IsArray() || !f[7].IsArray() || f[4].Type != gjson.String {
		return nil, false
	}
	r := &convRecord{
		responseID: responseID, apiKeyID: apiKeyID,
		previousID: f[2].Str, model: f[3].Str, accountID: f[4].Str,
		store:  f[5].Type != gjson.False,
		input:  event.Raw(b, f[6]),
		output: event.Raw(b, f[7]),
	}
	r.createdAt, _ = time.Parse(time.RFC3339Nano, f[8].Str)
	return r, true
}

// size is what the record costs in a chain, for the rebuild's bounds.
func (r *convRecord) size() int { return len(r.input) + len(r.output) + 128 }
