package event

import (
	"strings"
	"testing"

	"github.com/tidwall/gjson"
)

func TestClassify(t *testing.T) {
	cases := []struct {
		in   string
		kind Kind
		typ  string
		seq  int64
	}{
		{`{"type":"response.created","sequence_number":0,"response":{}}`, KindBootstrap, TypeCreated, 0},
		{`{"type":"response.in_progress","sequence_number":1}`, KindBootstrap, TypeInProgress, 1},
		{`{"type":"response.queued","sequence_number":1}`, KindBootstrap, TypeQueued, 1},
		{`{"type":"response.output_text.delta","delta":"x","sequence_number":7}`, KindOutput, "response.output_text.delta", 7},
		{`{"sequence_number":3,"type":"response.mcp_call.in_progress"}`, KindOutput, "response.mcp_call.in_progress", 3},
		{`{"type":"response.completed","sequence_number":9}`, KindTerminal, TypeCompleted, 9},
		{`{"type":"response.incomplete"}`, KindTerminal, TypeIncomplete, -1},
		{`{"type":"response.failed","sequence_number":2}`, KindTerminal, TypeFailed, 2},
		{`{"type":"error","code":"x","message":"m","sequence_number":4}`, KindError, TypeError, 4},
		{`not json`, KindOutput, "", -1},
	}
	for _, c := range cases {
		got := Classify([]byte(c.in))
		if got.Kind != c.kind || got.Type != c.typ || got.Seq != c.seq {
			t.Errorf("%s: got %+v", c.in, got)
		}
	}
}

func TestParseUsage(t *testing.T) {
	ev := []byte(`{"type":"response.incomplete","response":{"id":"resp_1","status":"incomplete","model":"m","service_tier":"flex",` +
		`"usage":{"input_tokens":75,"input_tokens_details":{"cached_tokens":5},"output_tokens":155,"output_tokens_details":{"reasoning_tokens":128},"total_tokens":230}}}`)
	r := ParseEventResponse(ev)
	want := Usage{Present: true, Input: 75, CachedInput: 5, Output: 155, Reasoning: 128, Total: 230}
	if r.Usage != want || r.ID != "resp_1" || r.Status != "incomplete" || r.ServiceTier != "flex" {
		t.Fatalf("got %+v", r)
	}
	// total_tokens missing: derived.
	r = ParseBody([]byte(`{"id":"resp_2","status":"completed","usage":{"input_tokens":3,"output_tokens":4}}`))
	if r.Usage.Total != 7 {
		t.Fatalf("total %d", r.Usage.Total)
	}
	// usage null: not present, all zero.
	if r := ParseEventResponse([]byte(`{"response":{"usage":null}}`)); r.Usage.Present || r.Usage.Total != 0 {
		t.Fatalf("got %+v", r.Usage)
	}
}

var deltaEvent = []byte(`{"type":"response.output_text.delta","content_index":0,"delta":"Hello","item_id":"msg_67c9fdcecf488190bdd9d0a8f0ae0ff4","logprobs":[],"obfuscation":"abcdefghij","output_index":0,"sequence_number":12}`)

// BenchmarkClassify: an event whose sequence_number comes last (gjson
// reads it).
func BenchmarkClassify(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		Classify(deltaEvent)
	}
}

// upstreamDelta is a delta as the upstream writes it: type, then
// sequence_number.
var upstreamDelta = []byte(`{"type":"response.output_text.delta","sequence_number":12,"item_id":"msg_67c9fdcecf488190bdd9d0a8f0ae0ff4","output_index":0,"content_index":0,"delta":"Hello","logprobs":[],"obfuscation":"abcdefghij"}`)

// BenchmarkClassifyUpstreamOrder: the same event in the upstream's order.
func BenchmarkClassifyUpstreamOrder(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		Classify(upstreamDelta)
	}
}

// classifyGJSON is Classify read wholly with gjson: the reference the
// fast reading must agree with.
func classifyGJSON(data []byte) Info {
	s := string(data)
	info := Info{Kind: KindOutput, Type: gjson.Get(s, "type").Str, Seq: -1}
	if seq := gjson.Get(s, "sequence_number"); seq.Type == gjson.Number {
		info.Seq = seq.Int()
	}
	return info
}

// FuzzClassifyAsGJSON: for any bytes, Classify's type and sequence number
// are gjson's (the kind follows from the type).
func FuzzClassifyAsGJSON(f *testing.F) {
	for _, s := range []string{
		string(upstreamDelta), string(deltaEvent),
		`{"type":"response.completed","sequence_number":9,"response":{}}`,
		`{"type":"x","sequence_number":9}`, `{"type":"x","sequence_number":9`, `{"type":"x","sequence_number":9.5}`,
		`{"type":"x","sequence_number":1e3}`, `{"type":"x","sequence_number":-1}`, `{"type":"x","sequence_number":007}`,
		`{"type":"x","sequence_number":12345678901234567890}`, `{"type":"x","sequence_number":"9"}`,
		`{"type":"a\"b","sequence_number":1}`, `{"type":"a\u0041","sequence_number":1}`, "{\"type\":\"a\tb\",\"sequence_number\":1}",
		`{"type":"x","type":"y","sequence_number":1,"sequence_number":2}`, `{"type":"x" ,"sequence_number":1}`,
		`{"type":"x"}`, `{"type":"`, `{"type":"x",`, `{ "type":"x","sequence_number":1}`, `not json`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, want := Classify(data), classifyGJSON(data)
		if got.Type != want.Type || got.Seq != want.Seq {
			t.Fatalf("%q: Classify %+v, gjson %+v", data, got, want)
		}
	})
}

var completedEvent = []byte(`{"type":"response.completed","sequence_number":40,"response":{"id":"resp_67c9fdcecf488190bdd9d0a8f0ae0ff4","object":"response","created_at":1741290958,"status":"completed","error":null,"incomplete_details":null,"model":"gpt-5","output":[{"type":"message","id":"msg_1","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Hello there, how can I help?","annotations":[]}]}],"service_tier":"default","usage":{"input_tokens":75,"input_tokens_details":{"cached_tokens":0},"output_tokens":155,"output_tokens_details":{"reasoning_tokens":128},"total_tokens":230}}}`)

func BenchmarkUsageExtraction(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		ParseEventResponse(completedEvent)
	}
}

func TestIsError(t *testing.T) {
	for in, want := range map[string]bool{
		`{"type":"error","status":429,"error":{"code":"rate_limit_exceeded"}}`: true,
		`{"sequence_number":3,"type":"error"}`:                                 true,
		`{"type":"response.output_text.delta","delta":"error"}`:                false,
		`{"type":"response.failed"}`:                                           false,
		`not json`:                                                             false,
	} {
		if got := IsError([]byte(in)); got != want {
			t.Errorf("%s: %v", in, got)
		}
	}
}

// bigCompleted is a terminal event with a 200-delta answer: its output
// stands before service_tier and usage.
var bigCompleted = func() []byte {
	text := strings.Repeat("token ", 200)
	return []byte(`{"type":"response.completed","sequence_number":202,"response":{"id":"resp_1","object":"response","created_at":1741290958,"status":"completed","error":null,"incomplete_details":null,"model":"gpt-5","output":[{"type":"reasoning","id":"rs_1","summary":[]},{"type":"message","id":"msg_1","status":"completed","role":"assistant","content":[{"type":"output_text","text":"` + text + `","annotations":[],"logprobs":[]}]}],"parallel_tool_calls":true,"reasoning":{"effort":"medium"},"service_tier":"default","store":true,"text":{"format":{"type":"text"}},"tools":[],"usage":{"input_tokens":75,"input_tokens_details":{"cached_tokens":0},"output_tokens":200,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":275}}}`)
}()

func BenchmarkUsageExtractionLongAnswer(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		ParseEventResponse(bigCompleted)
	}
}

// parseResponseGJSON is ParseResponse as one gjson lookup per field: the
// reference the single walk must agree with.
func parseResponseGJSON(obj gjson.Result) Response {
	r := Response{
		ID:          obj.Get("id").String(),
		Status:      obj.Get("status").String(),
		Model:       obj.Get("model").String(),
		ServiceTier: obj.Get("service_tier").String(),
		ErrorCode:   obj.Get("error.code").String(),
	}
	if u := obj.Get("usage"); u.IsObject() {
		r.Usage = parseUsage(u)
	}
	return r
}

// FuzzParseResponseAsGJSON: for any valid JSON, ParseBody and
// ParseEventResponse read what a gjson lookup per field reads; other
// bytes (gjson reads them each its own way) only must not break them.
func FuzzParseResponseAsGJSON(f *testing.F) {
	for _, s := range []string{
		string(completedEvent), string(bigCompleted),
		`{"id":"a","id":"b","status":1,"model":null,"service_tier":["x"],"usage":{"input_tokens":3},"usage":{"input_tokens":4}}`,
		`{"error":{"code":"x"},"error":{"code":"y"},"usage":"no"}`, `{"error":"e","usage":[1]}`,
		`{"i\u0064":"escaped","st\u0061tus":"s","usage":{"total_tokens":0,"input_tokens":2,"output_tokens":3}}`,
		`{"id":"a"`, `[{"id":"a"}]`, `"id"`, `{"response":{"id":"r"}}`, ``, `{`, `{"id":"a\"b"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s := string(data)
		if !gjson.Valid(s) {
			ParseBody(data)
			ParseEventResponse(data)
			return
		}
		if got, want := ParseBody(data), parseResponseGJSON(gjson.Parse(s)); got != want {
			t.Fatalf("%q: ParseBody %+v, gjson %+v", data, got, want)
		}
		if got, want := ParseEventResponse(data), parseResponseGJSON(gjson.Get(s, "response")); got != want {
			t.Fatalf("%q: ParseEventResponse %+v, gjson %+v", data, got, want)
		}
	})
}
