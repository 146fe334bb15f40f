package relay_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/relaykit/responsesrelay/billing"
)

// plainWrapper is a logging middleware's ResponseWriter as often written:
// it records the status and hides every optional interface (no Flush, no
// Unwrap).
type plainWrapper struct {
	w      http.ResponseWriter
	status int
}

func (p *plainWrapper) Header() http.Header         { return p.w.Header() }
func (p *plainWrapper) Write(b []byte) (int, error) { return p.w.Write(b) }
func (p *plainWrapper) WriteHeader(code int)        { p.status = code; p.w.WriteHeader(code) }

// unwrapWrapper is the same wrapper with Unwrap, which
// http.ResponseController follows.
type unwrapWrapper struct{ plainWrapper }

func (u *unwrapWrapper) Unwrap() http.ResponseWriter { return u.w }

// TestStreamBehindWrappingMiddleware: a middleware that wraps the
// ResponseWriter, with or without Unwrap, does not cut SSE streams: the
// client gets every event up to the terminal one and the turn is recorded
// completed. Without a way to flush, the relay logs it once.
func TestStreamBehindWrappingMiddleware(t *testing.T) {
	for _, c := range []struct {
		name   string
		wrap   func(http.ResponseWriter) http.ResponseWriter
		warned bool
	}{
		{"without_unwrap", func(w http.ResponseWriter) http.ResponseWriter { return &plainWrapper{w: w} }, true},
		{"with_unwrap", func(w http.ResponseWriter) http.ResponseWriter { return &unwrapWrapper{plainWrapper{w: w}} }, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, "a")
			e.mount(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				e.serve(c.wrap(w), r)
			}))
			for i := range 2 {
				r := e.do(streamReq)
				if r.status != 200 || r.lastType() != "response.completed" {
					t.Fatalf("turn %d: status %d, events %v", i, r.status, r.types())
				}
				if n := countType(r, "response.output_text.delta"); n == 0 {
					t.Fatalf("turn %d: no text deltas: %v", i, r.types())
				}
			}
			recs := e.sink.all()
			if len(recs) != 2 || recs[0].Status != billing.StatusCompleted || recs[1].Status != billing.StatusCompleted {
				t.Fatalf("records %+v", recs)
			}
			warnings := strings.Count(e.logs.String(), "cannot flush")
			if c.warned && warnings != 1 {
				t.Fatalf("want one warning about flushing, got %d:\n%s", warnings, e.logs.String())
			}
			if !c.warned && warnings != 0 {
				t.Fatalf("unexpected warning:\n%s", e.logs.String())
			}
		})
	}
}
