package chat

import (
	"runtime"
	"strings"
	"testing"
)

// stream200 is a streamed answer of 200 text deltas, as the upstream sends
// it: a role chunk, the deltas, the finish, the usage, [DONE].
func stream200() [][]byte {
	p := [][]byte{[]byte(chunk(`{"role":"assistant","content":""}`))}
	for i := range 200 {
		word := []string{`"Hello"`, `" world"`, `", and"`, `" more\n"`}[i%4]
		p = append(p, []byte(chunk(`{"content":`+word+`}`)))
	}
	return append(p, []byte(finishChunk("stop")), []byte(usageChunk), []byte("[DONE]"))
}

// openAIChunk is a chunk with every member OpenAI's Chat Completions
// stream carries when usage is asked for (the usage member is then null in
// all but the last chunk), and an obfuscation pad.
func openAIChunk(delta, finish string) []byte {
	return []byte(`{"id":"chatcmpl-Bx1yqzKc2v3V6c3n9qk5uYJ1xk0aT","object":"chat.completion.chunk","created":1700000000,` +
		`"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_560af6e559",` +
		`"choices":[{"index":0,"delta":` + delta + `,"logprobs":null,"finish_reason":` + finish + `}],"usage":null,"obfuscation":"k3Rb9"}`)
}

// stream200OpenAI is stream200 as OpenAI sends it.
func stream200OpenAI() [][]byte {
	p := [][]byte{openAIChunk(`{"role":"assistant","content":"","refusal":null}`, "null")}
	for i := range 200 {
		word := []string{`"Hello"`, `" world"`, `", and"`, `" more\n"`}[i%4]
		p = append(p, openAIChunk(`{"content":`+word+`}`, "null"))
	}
	return append(p, openAIChunk(`{}`, `"stop"`),
		[]byte(`{"id":"chatcmpl-Bx1yqzKc2v3V6c3n9qk5uYJ1xk0aT","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini-2024-07-18",`+
			`"service_tier":"default","system_fingerprint":"fp_560af6e559","choices":[],`+chatUsage+`,"obfuscation":"x"}`),
		[]byte("[DONE]"))
}

// runStream translates payloads with production ids and returns the
// number of events.
func runStream(ev *Events, payloads [][]byte) int {
	s := NewStream(nil, "gpt-x", 1700000000)
	n := 0
	for _, p := range payloads {
		ev.Reset()
		if err := s.Push(ev, p); err != nil {
			panic(err)
		}
		n += ev.Len()
	}
	return n
}

func BenchmarkStream200(b *testing.B) { benchStream(b, stream200()) }

// BenchmarkStream200OpenAI translates chunks of the size and shape OpenAI
// sends, which carry more members to skip.
func BenchmarkStream200OpenAI(b *testing.B) { benchStream(b, stream200OpenAI()) }

func benchStream(b *testing.B, payloads [][]byte) {
	var ev Events
	runStream(&ev, payloads) // grow the buffers once, as a relay's would be
	var before, after runtime.MemStats
	events, bytes := 0, 0
	for _, p := range payloads {
		bytes += len(p)
	}
	b.SetBytes(int64(bytes))
	b.ReportAllocs()
	runtime.ReadMemStats(&before)
	for b.Loop() {
		events += runStream(&ev, payloads)
	}
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/float64(events), "allocs/event")
	b.ReportMetric(b.Elapsed().Seconds()*1e9/float64(events), "ns/event")
}

func TestStream200Output(t *testing.T) {
	for _, payloads := range [][][]byte{stream200(), stream200OpenAI()} {
		var ev Events
		if n := runStream(&ev, payloads); n != 200+8 {
			t.Errorf("%d events, want 208", n)
		}
		want := strings.Repeat("Hello world, and more\n", 50)
		h := newHarness(t)
		for _, p := range payloads {
			if err := h.push(string(p)); err != nil {
				t.Fatal(err)
			}
		}
		if got := h.last().Get("response.output.0.content.0.text").String(); got != want {
			t.Errorf("text %q", got)
		}
		if u := h.last().Get("response.usage.total_tokens"); u.Int() == 0 {
			t.Errorf("usage %s", h.last().Get("response.usage").Raw)
		}
	}
}
