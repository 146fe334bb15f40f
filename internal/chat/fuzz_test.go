package chat

import (
	"testing"
	"unicode/utf8"

	"github.com/relaykit/responsesrelay/internal/jsonx"
)

// textChunks splits text into content chunks on rune boundaries, the piece
// lengths (in runes, 1 to 8) taken from splits in turn.
func textChunks(text string, splits []byte) []string {
	var out []string
	for i := 0; text != ""; i++ {
		n := 3
		if len(splits) > 0 {
			n = int(splits[i%len(splits)]%8) + 1
		}
		cut := 0
		for r := 0; r < n && cut < len(text); r++ {
			_, size := utf8.DecodeRuneInString(text[cut:])
			cut += size
		}
		b := jsonx.AppendString([]byte(`{"content":`), text[:cut])
		out = append(out, chunk(string(append(b, '}'))))
		text = text[cut:]
	}
	return out
}

// FuzzStreamSplits checks that arbitrary bytes as a chunk payload never
// panic nor break the event sequence, and that however a text is split
// into chunks, the translated output text is the text.
func FuzzStreamSplits(f *testing.F) {
	f.Add("Hello, world", []byte{1, 2, 3}, []byte(`{"choices":[{"delta":{"content":"x"}}]}`))
	f.Add("naïve ☃ \"quoted\"\n\u2028", []byte{0}, []byte(`{"choices":[{"delta":{"tool_calls":[{"index":-1}]}}]}`))
	f.Add("", []byte{}, []byte(`{"error":{"code":1}}`))
	f.Add("x", []byte{7, 7}, []byte(`{"choices":[{"delta":{"reasoning_content":"r","tool_calls":[{"index":99999999999,"id":"c"}]},"finish_reason":"length"}],"usage":{"prompt_tokens":"a"}}`))
	f.Add("ab", []byte{5}, []byte(`[DONE]`))
	// The leading members every chunk of the harness shares, then junk.
	f.Add("abc", []byte{2}, []byte(`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"up-1","choices":[{"delta":{"content":x}}]}`))
	f.Fuzz(func(t *testing.T, text string, splits, junk []byte) {
		// Hostile payloads: any error is fine, a panic or a bad event is not.
		h := newHarness(t)
		_ = h.push(string(junk))
		_ = h.push(chunk(`{"content":"a"}`))
		_ = h.push(string(junk))
		_ = h.push(finishChunk("stop"))
		_ = h.push(string(junk))
		_ = h.end()
		h.fail("server_error", "x")

		if !utf8.ValidString(text) {
			return // upstreams send JSON strings, which hold valid UTF-8
		}
		h = newHarness(t)
		chunks := textChunks(text, splits)
		h.feedAll(append(chunks, finishChunk("stop"), usageChunk, "[DONE]")...)
		out := h.last().Get("response.output")
		if got := out.Get("0.content.0.text").String(); got != text {
			t.Fatalf("output text %q, want %q", got, text)
		}
		if n := len(out.Array()); (text == "") != (n == 0) || n > 1 {
			t.Fatalf("%d output items for %q", n, text)
		}
		h.sameAsResponse(string(jsonx.AppendString([]byte(`{"created":1700000000,"choices":[{"message":{"content":`), text)) +
			`},"finish_reason":"stop"}],` + chatUsage + `}`)
	})
}
