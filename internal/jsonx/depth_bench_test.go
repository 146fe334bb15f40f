package jsonx

import (
	"strconv"
	"strings"
	"testing"
)

// requestBody is a typical Responses request of about size bytes:
// instructions, a tool schema, and a conversation of messages, function
// calls and their outputs.
func requestBody(size int) []byte {
	var b strings.Builder
	b.WriteString(`{"model":"gpt-5","stream":true,"store":false,"prompt_cache_key":"conv-1",` +
		`"instructions":"You are a helpful assistant. Answer briefly.",` +
		`"tools":[{"type":"function","name":"lookup","parameters":{"type":"object","properties":{"q":{"type":"string","description":"the \"query\""}},"required":["q"]}}],` +
		`"input":[`)
	text := strings.Repeat("lorem ipsum dolor sit amet, ", 12)
	for i := 0; b.Len() < size; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		n := strconv.Itoa(i)
		switch i % 4 {
		case 3:
			b.WriteString(`{"type":"function_call","call_id":"call_` + n + `","name":"lookup","arguments":"{\"q\":\"item ` + n + `\"}"},` +
				`{"type":"function_call_output","call_id":"call_` + n + `","output":"{\"result\":[1,2,3]}"}`)
		default:
			b.WriteString(`{"type":"message","role":"user","content":[{"type":"input_text","text":"` + text + n + `"}]}`)
		}
	}
	b.WriteString(`]}`)
	return []byte(b.String())
}

// BenchmarkDepth checks typical request bodies, as every turn does before
// its body is parsed.
func BenchmarkDepth(b *testing.B) {
	for _, size := range []int{10 << 10, 1 << 20} {
		body := requestBody(size)
		if DepthExceeds(body, 0) {
			b.Fatal("typical body rejected")
		}
		name := "10KB"
		if size > 10<<10 {
			name = "1MB"
		}
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				DepthExceeds(body, 0)
			}
		})
		// The scan alone: what a body with more than MaxDepth opening
		// brackets costs on top of counting them.
		b.Run(name+"-scan", func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				scanDepth(body, MaxDepth)
			}
		})
		b.Run(name+"-members", func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				Members(body, 0, func(k, v []byte) {})
			}
		})
	}
}

// BenchmarkDepthEvent checks one typical stream event, as the relay does
// for every event it forwards.
func BenchmarkDepthEvent(b *testing.B) {
	ev := []byte(`{"type":"response.output_text.delta","sequence_number":12,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"token","logprobs":[],"obfuscation":"abcdef"}`)
	b.SetBytes(int64(len(ev)))
	b.ReportAllocs()
	for b.Loop() {
		DepthExceeds(ev, 0)
	}
}
