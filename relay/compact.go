package relay

import (
	"github.com/relaykit/responsesrelay/internal/event"
	"net/http"

	"github.com/relaykit/responsesrelay/internal/jsonx"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
)

// Compaction v1 (POST …/responses/compact) is routed like a turn:
// stickiness, failover before any answer, one usage record. Some upstreams
// answer that endpoint 404; the relay then asks the same account for a
// normal response whose last input item is a compaction_trigger
// (compaction v2) and answers in the v1 shape: the input's user messages,
// then the one compaction item.

// compactPath is where the turn's body goes on the account.
func (t *turn) compactPath() string {
	if t.in.compact && !t.conv.compactByTrigger {
		return "/responses/compact"
	}
	return "/responses"
}

// triggerBody is a compact request as a normal one: a compaction_trigger
// appended to its input items, no stream.
func triggerBody(body []byte) ([]byte, error) {
	var b itemWriter
	b.items(inputItems(body), nil)
	b.add([]byte(`{"type":"compaction_trigger"}`))
	out, err := sjson.SetRawBytes(body, "input", b.close())
	if err != nil {
		return nil, err
	}
	return sjson.SetBytes(out, "stream", false)
}

// retryCompactByTrigger reports a compact request whose account does not
// serve the compact endpoint: the same account is asked again with the
// trigger, once.
func (t *turn) retryCompactByTrigger(ae *attemptError) bool {
	if !t.in.compact || t.conv.compactByTrigger || ae.kind != failStatus ||
		ae.status != http.StatusNotFound && ae.status != http.StatusMethodNotAllowed {
		return false
	}
	t.conv.compactByTrigger = true
	return true
}

// compactAnswer turns a normal response made with the trigger into the v1
// answer: {"id","object":"response.compaction","created_at","output":
// [the input's user messages…, the compaction item],"usage"}.
func (t *turn) compactAnswer(body []byte) []byte {
	out := make([]byte, 0, len(body)+len(t.in.req.Body))
	out = append(out, `{"id":`...)
	out = jsonx.AppendString(out, gjson.GetBytes(body, "id").Str)
	out = append(out, `,"object":"response.compaction","created_at":`...)
	if c := gjson.GetBytes(body, "created_at"); c.Exists() {
		out = append(out, c.Raw...)
	} else {
		out = append(out, '0')
	}
	var items itemWriter
	items.items(inputItems(t.in.req.Body), func(it gjson.Result) bool {
		role := it.Get("role").Str
		typ := it.Get("type").Str
		return !(role == "user" && (typ == "" || typ == "message"))
	})
	items.items(event.RawAt(body, "output"), func(it gjson.Result) bool { return it.Get("type").Str != "compaction" })
	out = append(out, `,"output":`...)
	out = append(out, items.close()...)
	if u := event.RawAt(body, "usage"); u != nil {
		out = append(out, `,"usage":`...)
		out = append(out, u...)
	}
	return append(out, '}')
}
