package relay

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"testing"

	"github.com/relaykit/responsesrelay/internal/pump"
)

// oneEventReader gives one event per Read, as an upstream read at the
// pace it writes does.
type oneEventReader struct {
	events [][]byte
	i      int
}

func (r *oneEventReader) Read(p []byte) (int, error) {
	if r.i >= len(r.events) {
		return 0, io.EOF
	}
	n := copy(p, r.events[r.i])
	r.i++
	return n, nil
}

// chainEvents is a 200-event stream in wire framing.
func chainEvents() [][]byte {
	var evs [][]byte
	add := func(typ, data string) { evs = append(evs, []byte("event: "+typ+"\ndata: "+data+"\n\n")) }
	add("response.created", `{"type":"response.created","sequence_number":0,"response":{"id":"resp_1","object":"response","status":"in_progress","model":"gpt-5"}}`)
	add("response.in_progress", `{"type":"response.in_progress","sequence_number":1,"response":{"id":"resp_1","object":"response","status":"in_progress","model":"gpt-5"}}`)
	for i := range 197 {
		add("response.output_text.delta", fmt.Sprintf(`{"type":"response.output_text.delta","sequence_number":%d,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"token","logprobs":[],"obfuscation":"abcdef"}`, i+2))
	}
	add("response.completed", `{"type":"response.completed","sequence_number":199,"response":{"id":"resp_1","object":"response","status":"completed","model":"gpt-5","output":[],"usage":{"input_tokens":3,"output_tokens":2,"total_tokens":5}}}`)
	return evs
}

// BenchmarkEventChain is a stream's work per event in the relay without
// a network or net/http: the SSE reader, the pump and the SSE writer over
// a ResponseWriter that keeps nothing, for a burst read at once and for
// events read one at a time (each then flushed); "copy" is what a byte
// copier (ReverseProxy) does with the same reads.
func BenchmarkEventChain(b *testing.B) {
	events := chainEvents()
	all := bytes.Join(events, nil)
	reader := func(burst bool) io.Reader {
		if burst {
			return bytes.NewReader(all)
		}
		return &oneEventReader{events: events}
	}
	for _, burst := range []bool{true, false} {
		name := map[bool]string{true: "burst", false: "one-by-one"}[burst]
		b.Run("relay/"+name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				src := newSSESource(reader(burst), 0)
				w := newSSEWriter(&callWriter{discard: true}, nil, 60e9, nil)
				res := pump.Run(context.Background(), src, w, pump.Options{HoldBootstrap: true, KeepAlive: 15e9, IdleTimeout: 300e9, Abort: func() {}})
				if res.End != pump.EndTerminal || res.Forwarded != len(events) {
					b.Fatalf("end %v, %d forwarded", res.End, res.Forwarded)
				}
				w.close()
				src.free()
			}
		})
		b.Run("copy/"+name, func(b *testing.B) {
			buf := make([]byte, 32<<10)
			w := &callWriter{discard: true}
			for b.Loop() {
				r := reader(burst)
				for {
					n, err := r.Read(buf)
					if n > 0 {
						w.Write(buf[:n])
						w.Flush()
					}
					if err != nil {
						break
					}
				}
			}
		})
	}
}
