package chat

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/relaykit/responsesrelay/internal/event"
	"github.com/tidwall/gjson"
)

// harness feeds a Stream and checks every event it appends: a JSON object
// whose type matches Events.Type and whose sequence_number continues the
// previous one.
type harness struct {
	t   testing.TB
	s   *Stream
	ev  Events
	got []string
}

func newHarness(t testing.TB) *harness {
	return &harness{t: t, s: NewStream(seqIDs(), "gpt-x", 1700000000)}
}

func (h *harness) push(p string) error {
	h.ev.Reset()
	err := h.s.Push(&h.ev, []byte(p))
	h.take()
	return err
}

func (h *harness) end() error {
	h.ev.Reset()
	err := h.s.End(&h.ev)
	h.take()
	return err
}

func (h *harness) fail(code, msg string) {
	h.ev.Reset()
	h.s.Fail(&h.ev, code, msg)
	h.take()
}

func (h *harness) take() {
	h.t.Helper()
	for i := range h.ev.Len() {
		b := h.ev.At(i)
		if !gjson.ValidBytes(b) {
			h.t.Fatalf("event %d is not JSON: %s", len(h.got), b)
		}
		if typ := gjson.GetBytes(b, "type").String(); typ != h.ev.Type(i) {
			h.t.Errorf("event type %q, Events.Type %q", typ, h.ev.Type(i))
		}
		if seq := gjson.GetBytes(b, "sequence_number"); seq.Type != gjson.Number || seq.Int() != int64(len(h.got)) {
			h.t.Errorf("event %d has sequence_number %s: %s", len(h.got), seq.Raw, b)
		}
		if info, want := h.ev.Info(i), event.Classify(b); info != want {
			h.t.Errorf("event %d: Events.Info %+v, event.Classify %+v", len(h.got), info, want)
		}
		h.got = append(h.got, string(b))
	}
}

func (h *harness) types() []string {
	var out []string
	for _, e := range h.got {
		out = append(out, strings.TrimPrefix(gjson.Get(e, "type").String(), "response."))
	}
	return out
}

func (h *harness) last() gjson.Result { return gjson.Parse(h.got[len(h.got)-1]) }

func chunk(delta string) string {
	return `{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"up-1","choices":[{"index":0,"delta":` + delta + `,"finish_reason":null}]}`
}

func finishChunk(reason string) string {
	return `{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"up-1","choices":[{"index":0,"delta":{},"finish_reason":"` + reason + `"}]}`
}

const usageChunk = `{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"up-1","choices":[],` + chatUsage + `}`

// feedAll pushes payloads, failing on any error.
func (h *harness) feedAll(payloads ...string) {
	h.t.Helper()
	for _, p := range payloads {
		if err := h.push(p); err != nil {
			h.t.Fatalf("Push(%s): %v", p, err)
		}
	}
}

// sameAsResponse checks that the terminal event's response is what
// Response makes of the equivalent non-streamed answer.
func (h *harness) sameAsResponse(chat string) {
	h.t.Helper()
	want, err := Response([]byte(chat), seqIDs(), "gpt-x", nil)
	if err != nil && !errors.Is(err, ErrNoUsage) {
		h.t.Fatal(err)
	}
	sameJSON(h.t, []byte(h.last().Get("response").Raw), string(want))
}

func TestStreamText(t *testing.T) {
	h := newHarness(t)
	h.feedAll(chunk(`{"role":"assistant","content":""}`), chunk(`{"content":"Hel"}`), chunk(`{"content":"lo\n\"x\""}`),
		finishChunk("stop"), usageChunk, "[DONE]")
	want := []string{"created", "in_progress", "output_item.added", "content_part.added", "output_text.delta", "output_text.delta",
		"output_text.done", "content_part.done", "output_item.done", "completed"}
	if got := h.types(); !slices.Equal(got, want) {
		t.Fatalf("types %v\nwant %v", got, want)
	}
	sameJSON(t, []byte(h.got[0]), `{"type":"response.created","sequence_number":0,"response":{"id":"resp_1","object":"response","created_at":1700000000,"status":"in_progress","error":null,"incomplete_details":null,"model":"gpt-x","output":[],"usage":null}}`)
	sameJSON(t, []byte(h.got[2]), `{"type":"response.output_item.added","sequence_number":2,"output_index":0,"item":{"id":"msg_1","type":"message","status":"in_progress","content":[],"role":"assistant"}}`)
	sameJSON(t, []byte(h.got[3]), `{"type":"response.content_part.added","sequence_number":3,"item_id":"msg_1","output_index":0,"content_index":0,"part":{"type":"output_text","annotations":[],"logprobs":[],"text":""}}`)
	sameJSON(t, []byte(h.got[5]), `{"type":"response.output_text.delta","sequence_number":5,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"lo\n\"x\"","logprobs":[]}`)
	sameJSON(t, []byte(h.got[6]), `{"type":"response.output_text.done","sequence_number":6,"item_id":"msg_1","output_index":0,"content_index":0,"text":"Hello\n\"x\"","logprobs":[]}`)
	sameJSON(t, []byte(h.got[8]), `{"type":"response.output_item.done","sequence_number":8,"output_index":0,"item":{"id":"msg_1","type":"message","status":"completed","content":[{"type":"output_text","annotations":[],"logprobs":[],"text":"Hello\n\"x\""}],"role":"assistant"}}`)
	if u := h.last().Get("response.usage"); u.Get("input_tokens").Int() != 75 || u.Get("output_tokens_details.reasoning_tokens").Int() != 128 {
		t.Errorf("usage %s", u.Raw)
	}
	if u := h.s.Usage(); !u.Present || u.Input != 75 || u.CachedInput != 64 || u.Output != 155 || u.Reasoning != 128 || u.Total != 230 {
		t.Errorf("Usage() = %+v", u)
	}
	if !h.s.Done() || h.s.ID() != "resp_1" {
		t.Errorf("Done %v ID %q", h.s.Done(), h.s.ID())
	}
	h.sameAsResponse(`{"created":1700000000,"choices":[{"message":{"role":"assistant","content":"Hello\n\"x\""},"finish_reason":"stop"}],` + chatUsage + `}`)
	// Nothing follows the terminal event.
	if err := h.push(chunk(`{"content":"late"}`)); err != nil || len(h.got) != len(want) {
		t.Errorf("after the end: err %v, %d events", err, len(h.got))
	}
}

func TestStreamParallelCalls(t *testing.T) {
	h := newHarness(t)
	h.feedAll(
		chunk(`{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"get","arguments":""}}]}`),
		chunk(`{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"put","arguments":""}}]}`),
		chunk(`{"tool_calls":[{"index":0,"function":{"arguments":"{\"c\":"}}]}`),
		chunk(`{"tool_calls":[{"index":1,"function":{"arguments":"{}"}}]}`),
		chunk(`{"tool_calls":[{"index":0,"function":{"arguments":"1}"}}]}`),
		finishChunk("tool_calls"), usageChunk, "[DONE]")
	want := []string{"created", "in_progress", "output_item.added", "output_item.added",
		"function_call_arguments.delta", "function_call_arguments.delta", "function_call_arguments.delta",
		"function_call_arguments.done", "output_item.done", "function_call_arguments.done", "output_item.done", "completed"}
	if got := h.types(); !slices.Equal(got, want) {
		t.Fatalf("types %v\nwant %v", got, want)
	}
	sameJSON(t, []byte(h.got[3]), `{"type":"response.output_item.added","sequence_number":3,"output_index":1,"item":{"id":"fc_2","type":"function_call","status":"in_progress","arguments":"","call_id":"call_b","name":"put"}}`)
	sameJSON(t, []byte(h.got[5]), `{"type":"response.function_call_arguments.delta","sequence_number":5,"item_id":"fc_2","output_index":1,"delta":"{}"}`)
	sameJSON(t, []byte(h.got[7]), `{"type":"response.function_call_arguments.done","sequence_number":7,"item_id":"fc_1","output_index":0,"name":"get","arguments":"{\"c\":1}"}`)
	sameJSON(t, []byte(h.got[10]), `{"type":"response.output_item.done","sequence_number":10,"output_index":1,"item":{"id":"fc_2","type":"function_call","status":"completed","arguments":"{}","call_id":"call_b","name":"put"}}`)
	h.sameAsResponse(`{"created":1700000000,"choices":[{"message":{"role":"assistant","content":null,"tool_calls":[
		{"id":"call_a","type":"function","function":{"name":"get","arguments":"{\"c\":1}"}},
		{"id":"call_b","type":"function","function":{"name":"put","arguments":"{}"}}]},"finish_reason":"tool_calls"}],` + chatUsage + `}`)
}

func TestStreamReasoningThenText(t *testing.T) {
	h := newHarness(t)
	h.feedAll(chunk(`{"role":"assistant","reasoning_content":"Let me"}`), chunk(`{"reasoning_content":" think"}`),
		chunk(`{"content":"Answer","reasoning_content":null}`), chunk(`{"tool_calls":[{"index":0,"id":"call_a","function":{"name":"f","arguments":"{}"}}]}`),
		finishChunk("tool_calls"), usageChunk, "[DONE]")
	want := []string{"created", "in_progress",
		"output_item.added", "content_part.added", "reasoning_text.delta", "reasoning_text.delta", "reasoning_text.done", "content_part.done", "output_item.done",
		"output_item.added", "content_part.added", "output_text.delta", "output_text.done", "content_part.done", "output_item.done",
		"output_item.added", "function_call_arguments.delta", "function_call_arguments.done", "output_item.done", "completed"}
	if got := h.types(); !slices.Equal(got, want) {
		t.Fatalf("types %v\nwant %v", got, want)
	}
	sameJSON(t, []byte(h.got[3]), `{"type":"response.content_part.added","sequence_number":3,"item_id":"rs_1","output_index":0,"content_index":0,"part":{"type":"reasoning_text","text":""}}`)
	sameJSON(t, []byte(h.got[5]), `{"type":"response.reasoning_text.delta","sequence_number":5,"item_id":"rs_1","output_index":0,"content_index":0,"delta":" think"}`)
	sameJSON(t, []byte(h.got[6]), `{"type":"response.reasoning_text.done","sequence_number":6,"item_id":"rs_1","output_index":0,"content_index":0,"text":"Let me think"}`)
	sameJSON(t, []byte(h.got[8]), `{"type":"response.output_item.done","sequence_number":8,"output_index":0,"item":{"id":"rs_1","type":"reasoning","summary":[],"content":[{"type":"reasoning_text","text":"Let me think"}]}}`)
	if g := gjson.Get(h.got[11], "output_index").Int(); g != 1 {
		t.Errorf("text output_index %d", g)
	}
	h.sameAsResponse(`{"created":1700000000,"choices":[{"message":{"role":"assistant","reasoning_content":"Let me think","content":"Answer","tool_calls":[
		{"id":"call_a","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"tool_calls"}],` + chatUsage + `}`)
}

func TestStreamIncomplete(t *testing.T) {
	for reason, want := range map[string]string{"length": "max_output_tokens", "content_filter": "content_filter"} {
		h := newHarness(t)
		h.feedAll(chunk(`{"content":"Hal"}`), finishChunk(reason), usageChunk, "[DONE]")
		last := h.last()
		if last.Get("type").Str != "response.incomplete" || last.Get("response.status").Str != "incomplete" ||
			last.Get("response.incomplete_details.reason").Str != want {
			t.Errorf("%s: terminal %s", reason, last.Raw)
		}
		if st := gjson.Get(h.got[len(h.got)-2], "item.status").Str; st != "incomplete" {
			t.Errorf("%s: item done with status %q", reason, st)
		}
		h.sameAsResponse(`{"created":1700000000,"choices":[{"message":{"content":"Hal"},"finish_reason":"` + reason + `"}],` + chatUsage + `}`)
	}
}

func TestStreamUsageInFinishChunk(t *testing.T) {
	h := newHarness(t)
	fin := strings.TrimSuffix(finishChunk("stop"), "}") + "," + chatUsage + "}"
	h.feedAll(chunk(`{"content":"a"}`), fin, "[DONE]")
	if h.last().Get("response.usage.total_tokens").Int() != 230 {
		t.Errorf("terminal %s", h.last().Raw)
	}
}

func TestStreamMissingUsage(t *testing.T) {
	h := newHarness(t)
	h.feedAll(chunk(`{"content":"a"}`), finishChunk("stop"))
	if err := h.push("[DONE]"); !errors.Is(err, ErrNoUsage) {
		t.Fatalf("[DONE] without usage: err = %v", err)
	}
	if last := h.last(); last.Get("type").Str != "response.completed" || last.Get("response.usage").Type != gjson.Null {
		t.Errorf("terminal %s", last.Raw)
	}
	if h.s.Usage().Present {
		t.Error("Usage().Present without usage")
	}

	// EOF after a finish_reason, without [DONE], ends the stream too.
	h = newHarness(t)
	h.feedAll(chunk(`{"content":"a"}`), finishChunk("stop"))
	if err := h.end(); !errors.Is(err, ErrNoUsage) || h.last().Get("type").Str != "response.completed" {
		t.Errorf("End: err %v, last %s", err, h.last().Raw)
	}
	h = newHarness(t)
	h.feedAll(chunk(`{"content":"a"}`), finishChunk("stop"), usageChunk)
	if err := h.end(); err != nil || h.last().Get("type").Str != "response.completed" {
		t.Errorf("End with usage: err %v, last %s", err, h.last().Raw)
	}
	if err := h.end(); err != nil || len(h.got) != 9 {
		t.Errorf("second End: err %v, %d events", err, len(h.got))
	}
}

func TestStreamCutShort(t *testing.T) {
	h := newHarness(t)
	h.feedAll(chunk(`{"content":"par"}`))
	n := len(h.got)
	if err := h.end(); !errors.Is(err, ErrCutShort) || len(h.got) != n {
		t.Fatalf("End before finish: err %v, %d new events", err, len(h.got)-n)
	}
	h.fail("server_error", "upstream closed the stream")
	last := h.last()
	if last.Get("type").Str != "response.failed" || last.Get("response.status").Str != "failed" ||
		last.Get("response.error.code").Str != "server_error" ||
		last.Get("response.output.0.status").Str != "in_progress" || last.Get("response.output.0.content.0.text").Str != "par" {
		t.Errorf("failed event %s", last.Raw)
	}
	if !h.s.Done() {
		t.Error("not Done after Fail")
	}
}

func TestStreamErrorChunk(t *testing.T) {
	errChunk := `{"error":{"message":"Rate limit reached","type":"rate_limit_error","code":"rate_limit_exceeded"}}`
	// Before output: nothing but the bootstrap went out; the relay fails over.
	h := newHarness(t)
	h.feedAll(chunk(`{"role":"assistant","content":""}`))
	err := h.push(errChunk)
	var ue *UpstreamError
	if !errors.As(err, &ue) || ue.Code != "rate_limit_exceeded" || ue.Type != "rate_limit_error" || ue.Message != "Rate limit reached" {
		t.Fatalf("err = %#v", err)
	}
	if h.s.HasOutput() || len(h.got) != 2 {
		t.Errorf("HasOutput %v, %d events", h.s.HasOutput(), len(h.got))
	}
	// After output: the relay ends the stream with response.failed.
	h = newHarness(t)
	h.feedAll(chunk(`{"content":"a"}`))
	if err := h.push(`{"error":"boom"}`); !errors.As(err, &ue) || ue.Message != "boom" {
		t.Fatalf("err = %v", err)
	}
	if !h.s.HasOutput() {
		t.Error("HasOutput false after text")
	}
	h.fail("server_error", "boom")
	if got := h.types(); got[len(got)-1] != "failed" || len(got) != 6 {
		t.Errorf("types %v", got)
	}
	// Fail before any chunk still opens the response.
	h = newHarness(t)
	h.fail("server_error", "x")
	if got := h.types(); !slices.Equal(got, []string{"created", "in_progress", "failed"}) {
		t.Errorf("types %v", got)
	}
}

func TestStreamMalformed(t *testing.T) {
	h := newHarness(t)
	for _, p := range []string{`not json`, `[1,2]`, `"x"`, ``, strings.Repeat("[", 1000)} {
		if err := h.push(p); !errors.Is(err, ErrMalformed) {
			t.Errorf("Push(%.20q) err = %v", p, err)
		}
	}
	if len(h.got) != 0 {
		t.Errorf("%d events from malformed payloads", len(h.got))
	}
}

func TestStreamCallWithoutIndex(t *testing.T) {
	// Some servers send whole calls without an index: each id is a call.
	h := newHarness(t)
	h.feedAll(chunk(`{"tool_calls":[{"id":"call_a","function":{"name":"f","arguments":"{\"a\":"}}]}`),
		chunk(`{"tool_calls":[{"function":{"arguments":"1}"}}]}`),
		chunk(`{"tool_calls":[{"id":"call_b","function":{"name":"g","arguments":"{}"}}]}`),
		finishChunk("tool_calls"), usageChunk, "[DONE]")
	h.sameAsResponse(`{"created":1700000000,"choices":[{"message":{"tool_calls":[
		{"id":"call_a","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}},
		{"id":"call_b","type":"function","function":{"name":"g","arguments":"{}"}}]},"finish_reason":"tool_calls"}],` + chatUsage + `}`)
}

func TestStreamDoneOnly(t *testing.T) {
	h := newHarness(t)
	if err := h.push("[DONE]"); !errors.Is(err, ErrNoUsage) {
		t.Errorf("err = %v", err)
	}
	if got := h.types(); !slices.Equal(got, []string{"created", "in_progress", "completed"}) {
		t.Errorf("types %v", got)
	}
}

func TestStreamRefusal(t *testing.T) {
	h := newHarness(t)
	h.feedAll(chunk(`{"role":"assistant","content":null,"refusal":""}`), chunk(`{"refusal":"I can't"}`), chunk(`{"refusal":" help."}`),
		finishChunk("stop"), usageChunk, "[DONE]")
	want := []string{"created", "in_progress", "output_item.added", "content_part.added", "refusal.delta", "refusal.delta",
		"refusal.done", "content_part.done", "output_item.done", "completed"}
	if got := h.types(); !slices.Equal(got, want) {
		t.Fatalf("types %v\nwant %v", got, want)
	}
	sameJSON(t, []byte(h.got[3]), `{"type":"response.content_part.added","sequence_number":3,"item_id":"msg_1","output_index":0,"content_index":0,"part":{"type":"refusal","refusal":""}}`)
	sameJSON(t, []byte(h.got[4]), `{"type":"response.refusal.delta","sequence_number":4,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"I can't"}`)
	sameJSON(t, []byte(h.got[6]), `{"type":"response.refusal.done","sequence_number":6,"item_id":"msg_1","output_index":0,"content_index":0,"refusal":"I can't help."}`)
	sameJSON(t, []byte(h.last().Get("response.output").Raw), `[{"id":"msg_1","type":"message","status":"completed","content":[{"type":"refusal","refusal":"I can't help."}],"role":"assistant"}]`)
	h.sameAsResponse(`{"created":1700000000,"choices":[{"message":{"content":null,"refusal":"I can't help."},"finish_reason":"stop"}],` + chatUsage + `}`)
}

func TestStreamOtherChoicesIgnored(t *testing.T) {
	h := newHarness(t)
	h.feedAll(chunk(`{"content":"a"}`),
		`{"choices":[{"index":1,"delta":{"content":"other"},"finish_reason":"stop"}]}`,
		finishChunk("stop"), usageChunk, "[DONE]")
	if got := h.last().Get("response.output.0.content.0.text").String(); got != "a" || len(h.last().Get("response.output").Array()) != 1 {
		t.Errorf("output %s", h.last().Get("response.output").Raw)
	}
}

func TestStreamTooManyCalls(t *testing.T) {
	h := newHarness(t)
	calls := make([]string, maxItems+1)
	for i := range calls {
		calls[i] = `{"index":` + strconv.Itoa(i) + `,"id":"c","function":{"name":"f"}}`
	}
	if err := h.push(chunk(`{"tool_calls":[` + strings.Join(calls, ",") + `]}`)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("err = %v", err)
	}
	if n := len(h.s.o.items); n != maxItems {
		t.Errorf("%d items", n)
	}
}
