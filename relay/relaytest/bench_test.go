package relaytest_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/relaykit/responsesrelay/relay/relaytest"
)

// discardWriter is a ResponseWriter that drops everything, to measure the
// handler alone.
type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (d *discardWriter) WriteHeader(int)             {}
func (d *discardWriter) Flush()                      {}

func benchmarkHandler(b *testing.B, body string) { benchmarkPath(b, "/v1/responses", body) }

func benchmarkPath(b *testing.B, path, body string) {
	u := relaytest.New()
	u.NoLog = true
	u.SetDefault("", relaytest.Step{Deltas: 200})
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		r, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, path, strings.NewReader(body))
		r.Header.Set("Authorization", "Bearer k")
		clear(w.h)
		u.ServeHTTP(w, r)
	}
}

// BenchmarkHandlerStream200 is one streaming turn of 200 deltas (209 events).
func BenchmarkHandlerStream200(b *testing.B) {
	benchmarkHandler(b, `{"model":"gpt-5","stream":true,"store":false,"input":"hello there"}`)
}

// BenchmarkHandlerJSON is one non-streaming turn.
func BenchmarkHandlerJSON(b *testing.B) {
	benchmarkHandler(b, `{"model":"gpt-5","store":false,"input":"hello there"}`)
}

// BenchmarkHandlerChatStream200 is one streaming chat completion of 200
// content pieces (203 data: lines with the usage chunk).
func BenchmarkHandlerChatStream200(b *testing.B) {
	benchmarkPath(b, "/v1/chat/completions",
		`{"model":"gpt-5","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hello there"}]}`)
}

// BenchmarkServerStream200 is a streaming turn over loopback HTTP.
func BenchmarkServerStream200(b *testing.B) {
	s := relaytest.NewServer()
	defer s.Close()
	s.NoLog = true
	s.SetDefault("a", relaytest.Step{Deltas: 200})
	c := s.Client()
	url := s.BaseURL("a") + "/responses"
	b.ReportAllocs()
	for b.Loop() {
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"model":"gpt-5","stream":true,"input":"hello"}`))
		req.Header.Set("Authorization", "Bearer k")
		resp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// BenchmarkServerWSTurn200 is a turn of 200 deltas (209 event messages) on
// an open WebSocket over loopback.
func BenchmarkServerWSTurn200(b *testing.B) {
	s := relaytest.NewServer()
	defer s.Close()
	s.NoLog = true
	s.SetDefault("a", relaytest.Step{Deltas: 200})
	ctx := context.Background()
	c, _, err := websocket.Dial(ctx, s.WSURL("a"), &websocket.DialOptions{HTTPClient: s.Client(),
		HTTPHeader: http.Header{"Authorization": {"Bearer k"}}})
	if err != nil {
		b.Fatal(err)
	}
	defer c.CloseNow()
	msg := []byte(`{"type":"response.create","model":"gpt-5","store":false,"input":"hello"}`)
	var event bytes.Buffer // reused, so that allocations are mostly the server's
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Write(ctx, websocket.MessageText, msg); err != nil {
			b.Fatal(err)
		}
		for {
			_, r, err := c.Reader(ctx)
			if err == nil {
				event.Reset()
				_, err = event.ReadFrom(r)
			}
			if err != nil {
				b.Fatal(err)
			}
			if bytes.Contains(event.Bytes(), []byte(`"type":"response.completed"`)) {
				break
			}
		}
	}
}
