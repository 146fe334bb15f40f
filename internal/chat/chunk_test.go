package chat

import (
	"errors"
	"strings"
	"testing"

	"github.com/relaykit/responsesrelay/internal/jsonx"
	"github.com/tidwall/gjson"
)

// firstText is the text of the terminal event's first output item.
func firstText(h *harness) string {
	return h.last().Get("response.output.0.content.0.text").String()
}

// A member written twice counts by its last occurrence, at every level
// the translation reads; a key written with escapes is the key it decodes
// to.
func TestStreamRepeatedMembers(t *testing.T) {
	h := newHarness(t)
	h.feedAll(
		`{"choices":[{"index":0,"delta":{"content":"lost"}}],"choices":[{"index":0,"delta":{"content":"a","content":"b"}}]}`,
		`{"choices":[{"index":0,"delta":{"content":"lost"},"delta":{"content":"c"}}]}`,
		`{"choices":[{"index":0,"delta":{"cont\u0065nt":"d"}}]}`,
		`{"choices":[{"index":0,"delta":{"content":"e","content":null}}]}`,
		`{"choices":[{"index":1,"index":0,"delta":{"content":"f"}}]}`,
		`{"choices":[{"index":0,"delta":{"content":"g"},"finish_reason":"length","finish_reason":"stop"}]}`,
		`{"choices":[],"usage":{"prompt_tokens":1},"usage":{"prompt_tokens":2,"completion_tokens":3}}`,
		"[DONE]")
	if got := firstText(h); got != "bcdfg" {
		t.Errorf("text %q, want bcdfg", got)
	}
	last := h.last()
	if last.Get("type").Str != "response.completed" || last.Get("response.usage.input_tokens").Int() != 2 || last.Get("response.usage.total_tokens").Int() != 5 {
		t.Errorf("terminal event %s", last.Raw)
	}
	// The first error that is not null is the one reported.
	h = newHarness(t)
	err := h.push(`{"error":null,"error":{"message":"first"},"error":{"message":"second"}}`)
	var ue *UpstreamError
	if !errors.As(err, &ue) || ue.Message != "first" {
		t.Errorf("err = %v", err)
	}
}

// Every delta event writes its text as jsonx.AppendString would: an escape
// the upstream chose (\/, \u00e9, a surrogate pair) is decoded and written
// again, U+2028 is escaped, invalid UTF-8 becomes U+FFFD; plain text and
// the common escapes go out as the upstream wrote them.
func TestStreamDeltaEscapes(t *testing.T) {
	pieces := []string{`plain`, `q\"b\\n\nr\rt\t`, `\/\b\f`, `\u00e9\u0041`, `\ud83d\ude00`, `\ud800x`, "\u2028", "naïve ☃", "bad\xffbyte", `\u0000`}
	h := newHarness(t)
	var want strings.Builder
	for _, p := range pieces {
		h.feedAll(chunk(`{"content":"` + p + `"}`))
		d := gjson.Get(h.got[len(h.got)-1], "delta")
		dec := string(jsonx.AppendUnescaped(nil, []byte(p)))
		if enc := string(jsonx.AppendString(nil, dec)); d.Raw != enc {
			t.Errorf("piece %q: delta %s, want %s", p, d.Raw, enc)
		}
		want.WriteString(dec)
	}
	h.feedAll(finishChunk("stop"), usageChunk, "[DONE]")
	done := gjson.Get(h.got[len(h.got)-4], "text")
	if enc := string(jsonx.AppendString(nil, want.String())); done.Raw != enc {
		t.Errorf("done text %s, want %s", done.Raw, enc)
	}
}

// Every token of a chunk is checked before any of it is applied: a chunk
// that is not JSON, cut, or nested too deep changes nothing.
func TestStreamMalformedTokens(t *testing.T) {
	deep := strings.Repeat("[", jsonx.MaxDepth) + strings.Repeat("]", jsonx.MaxDepth)
	for _, p := range []string{
		chunk(`{"content":bare}`),
		chunk(`{"content":"a",}`),
		chunk(`{"content":"a"}`) + `x`,
		chunk(`{"content":"a" "refusal":"b"}`),
		chunk(`{"content":"a\x"}`),
		chunk(`{"content":"a` + "\x01" + `"}`),
		chunk(`{"content":"a"}`)[:60],
		chunk(`{"content":"a","x":` + deep + `}`),
		`{"choices":` + strings.Repeat("[", 1_000_000),
		`{"error":{"message":"x"},"tail":01}`,
	} {
		h := newHarness(t)
		if err := h.push(p); !errors.Is(err, ErrMalformed) {
			t.Errorf("Push(%.60q) err = %v", p, err)
		}
		if len(h.got) != 0 || h.s.HasOutput() {
			t.Errorf("Push(%.60q): %d events", p, len(h.got))
		}
	}
	// MaxDepth levels in all, the chunk's own four included, pass.
	ok := strings.Repeat("[", jsonx.MaxDepth-4) + strings.Repeat("]", jsonx.MaxDepth-4)
	h := newHarness(t)
	h.feedAll(chunk(`{"content":"a","x":` + ok + `}`))
	if !h.s.HasOutput() {
		t.Error("a chunk MaxDepth deep rejected")
	}
}

// A tool call whose members repeat or are not strings is read as before
// the single-pass reader: the first occurrence counts, a number or object
// counts as its JSON text.
func TestStreamUnusualToolCalls(t *testing.T) {
	h := newHarness(t)
	h.feedAll(
		chunk(`{"tool_calls":[{"index":0,"id":7,"function":{"name":"f","arguments":{"a":1}}}]}`),
		chunk(`{"tool_calls":[{"index":1,"index":0,"id":"call_b","function":{"name":"g","arguments":"x"}}]}`),
		chunk(`{"tool_calls":[{"index":1,"id":"call_c","function":{"name":"h","name":"i","arguments":"y"}}]}`),
		chunk(`{"tool_calls":[{"index":2,"id":null,"function":null}]}`),
		chunk(`{"tool_calls":"not an array"}`),
		finishChunk("tool_calls"), usageChunk, "[DONE]")
	out := h.last().Get("response.output")
	want := `[{"id":"fc_1","type":"function_call","status":"completed","arguments":"{\"a\":1}","call_id":"7","name":"f"},` +
		`{"id":"fc_2","type":"function_call","status":"completed","arguments":"xy","call_id":"call_b","name":"g"},` +
		`{"id":"fc_3","type":"function_call","status":"completed","arguments":"","call_id":"call_1","name":""}]`
	sameJSON(t, []byte(out.Raw), want)
	// Elements that open no item cost no memory of their own, however many.
	h = newHarness(t)
	h.feedAll(chunk(`{"tool_calls":[{"index":0,"id":"c","function":{"name":"f"}}]}`),
		chunk(`{"tool_calls":[`+strings.TrimSuffix(strings.Repeat(`{"index":0},`, 200_000), ",")+`]}`))
	if n := len(h.s.o.items); n != 1 {
		t.Errorf("%d items", n)
	}
}

// A stream's chunks share their leading members; a chunk that begins with
// the same bytes is read from after them, and any other is read whole.
func TestStreamSharedPrefix(t *testing.T) {
	c := func(head, delta string) string {
		return `{` + head + `,"choices":[{"index":0,"delta":{"content":"` + delta + `"}}]}`
	}
	h := newHarness(t)
	h.feedAll(c(`"id":"a","created":170`, "1"), c(`"id":"a","created":170`, "2"))
	if got := string(h.s.prefix); got != `{"id":"a","created":170` {
		t.Fatalf("prefix %q", got)
	}
	// The same bytes followed by more digits: the number goes on, the
	// chunk is read whole.
	h.feedAll(c(`"id":"a","created":1705`, "3"), c(`"id":"b","created":1`, "4"))
	// The same head, then bytes that are not JSON: rejected as ever.
	for _, bad := range []string{
		`{"id":"b","created":1,"choices":[{"delta":{"content":x}}]}`,
		`{"id":"b","created":1,}`,
		`{"id":"b","created":1,"choices":[]}}`,
		`{"id":"b","created":1`,
		`{"id":"b","created":1,"error":{"message":"m"}` + strings.Repeat("[", 600) + `}`,
	} {
		if err := h.push(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("Push(%.60q) err = %v", bad, err)
		}
	}
	// An error member after the shared head is read.
	h2 := newHarness(t)
	h2.feedAll(c(`"id":"b","created":1`, "x"))
	var ue *UpstreamError
	if err := h2.push(`{"id":"b","created":1,"error":{"message":"m"}}`); !errors.As(err, &ue) || ue.Message != "m" {
		t.Errorf("err = %v", err)
	}
	h.feedAll(c(`"id":"b","created":1`, "5"), finishChunk("stop"), usageChunk, "[DONE]")
	if got := firstText(h); got != "12345" {
		t.Errorf("text %q", got)
	}
	// A head longer than maxPrefix is not kept.
	h = newHarness(t)
	h.feedAll(c(`"pad":"`+strings.Repeat("p", maxPrefix)+`"`, "x"))
	if len(h.s.prefix) != 0 {
		t.Errorf("kept a prefix of %d bytes", len(h.s.prefix))
	}
}

// The usual head of choices ([{"index":0,"delta":{) is matched whole; what
// follows it is read and checked as in any other chunk.
func TestStreamChoicesHead(t *testing.T) {
	h := newHarness(t)
	h.feedAll(
		`{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null},{"index":1,"delta":{"content":"x"}}]}`,
		`{"choices":[{"index":0,"delta":{}}]}`,
		`{"choices":[{"index":0,"delta":{"role":"assistant","content":"b"},"index":1}]}`,
		`{"choices":[ {"index":0,"delta":{"content":"c"}}]}`,
		`{"choices":[{"index":0,"delta":{"content":"d"},"delta":{"refusal":null}}]}`,
	)
	for _, bad := range []string{
		`{"choices":[{"index":0,"delta":{"content":"a"}]}`,
		`{"choices":[{"index":0,"delta":{"content":"a"}}}`,
		`{"choices":[{"index":0,"delta":{"content":"a"}},]}`,
		`{"choices":[{"index":0,"delta":{`,
	} {
		if err := h.push(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("Push(%s) err = %v", bad, err)
		}
	}
	h.feedAll(finishChunk("stop"), usageChunk, "[DONE]")
	if got := firstText(h); got != "ac" {
		t.Errorf("text %q, want ac", got)
	}
}
