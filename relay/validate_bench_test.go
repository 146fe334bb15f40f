package relay

import (
	"strings"
	"testing"
)

// body100K is a request of about 100 KiB: a long conversation as input
// items, a function call and its output among them.
func body100K() []byte {
	var b strings.Builder
	b.WriteString(`{"model":"gpt-5","stream":true,"prompt_cache_key":"conv-1","input":[`)
	msg := strings.Repeat("lorem ipsum dolor sit amet ", 40)
	for i := 0; b.Len() < 100<<10; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"type":"message","role":"user","content":[{"type":"input_text","text":"` + msg + `"}]}`)
	}
	b.WriteString(`,{"type":"function_call","call_id":"call_1","name":"f","arguments":"{}"}`)
	b.WriteString(`,{"type":"function_call_output","call_id":"call_1","output":"ok"}]}`)
	return []byte(b.String())
}

// BenchmarkParseRequest100K validates a 100 KiB body, as every turn does
// before it takes a slot.
func BenchmarkParseRequest100K(b *testing.B) {
	body := body100K()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parseRequest(body); err != nil {
			b.Fatal(err)
		}
	}
}
