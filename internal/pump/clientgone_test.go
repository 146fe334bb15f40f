package pump

import (
	"context"
	"errors"
	"testing"
)

// cutSource yields its events, then cancels the client and fails at once,
// as an upstream the caller cut because the client left.
type cutSource struct {
	sliceSource
	cancel context.CancelFunc
}

func (s *cutSource) Next() ([]byte, error) {
	if s.i < len(s.events) {
		return s.sliceSource.Next()
	}
	s.cancel()
	return nil, errors.New("use of closed network connection")
}

// TestClientGoneBeforeWatch: an upstream cut on the client's departure
// ends the run as client gone even before the pump's own watch of the
// client context has run: the account is not blamed for a broken stream.
func TestClientGoneBeforeWatch(t *testing.T) {
	for i := 0; i < 200; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		src := &cutSource{sliceSource: sliceSource{events: append(created(), ev("response.output_text.delta", 2, `,"delta":"a"`))}, cancel: cancel}
		sink := &recSink{}
		res := Run(ctx, src, sink, Options{HoldBootstrap: true})
		if res.End != EndClientGone {
			t.Fatalf("run %d: end %v, events %v", i, res.End, sink.types)
		}
		if n := len(sink.types); n != 3 {
			t.Fatalf("run %d: %d events sent, a response.failed to a gone client?", i, n)
		}
	}
}
