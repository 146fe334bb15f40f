package relaytest_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/relaykit/responsesrelay/relay/relaytest"
)

// discardWriter is a ResponseWriter that drops everything, to measure the
// handler alone.
type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (d *discardWriter) WriteHeader(int)             {}
func (d *discardWriter) Flush()                      {}

func benchmarkHandler(b *testing.B, body string) {
	u := relaytest.New()
	u.SetLogging(false)
	u.SetDefault("", relaytest.Step{Deltas: 200})
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		r, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, "/v1/responses", strings.NewReader(body))
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

// BenchmarkServerStream200 is a streaming turn over loopback HTTP.
func BenchmarkServerStream200(b *testing.B) {
	s := relaytest.NewServer()
	defer s.Close()
	s.SetLogging(false)
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
