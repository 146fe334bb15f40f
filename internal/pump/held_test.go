package pump

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// countingSource yields the same event n times and counts the bytes it
// handed out: the pump cannot hold more than it read.
type countingSource struct {
	data  []byte
	n     int
	read  int
	bytes int
}

func (s *countingSource) Next() ([]byte, error) {
	if s.read == s.n {
		return nil, errors.New("source exhausted: the pump never stopped reading")
	}
	s.read++
	s.bytes += len(s.data)
	return s.data, nil
}

// TestHeldBounded: an upstream that repeats bootstrap events before any
// output is refused once the held events would pass the count or byte
// bound; nothing reaches the client and the pump stops reading.
func TestHeldBounded(t *testing.T) {
	small := ev("response.created", 0, `,"response":{"id":"resp_1","usage":null}`)
	big := ev("response.in_progress", 0, `,"response":{"id":"resp_1","instructions":"`+strings.Repeat("x", 200<<10)+`"}`)
	for _, c := range []struct {
		name      string
		data      []byte
		o         Options
		wantReads int
	}{
		{"count default", small, Options{}, DefaultMaxHeldEvents + 1},
		{"bytes default", big, Options{}, DefaultMaxHeldBytes/len(big) + 1},
		{"count set", small, Options{MaxHeldEvents: 3}, 4},
		{"bytes set", big, Options{MaxHeldBytes: 3 * len(big)}, 4},
	} {
		t.Run(c.name, func(t *testing.T) {
			src := &countingSource{data: c.data, n: 100000}
			sink := &recSink{}
			c.o.HoldBootstrap = true
			res := Run(context.Background(), src, sink, c.o)
			if res.End != EndRefused || !errors.Is(res.Err, ErrTooManyHeld) || res.Started || len(sink.types) != 0 {
				t.Fatalf("end %v err %v started %v sent %v", res.End, res.Err, res.Started, sink.types)
			}
			if src.read != c.wantReads {
				t.Fatalf("read %d events (%d bytes), want %d", src.read, src.bytes, c.wantReads)
			}
			limit := c.o.MaxHeldBytes
			if limit == 0 {
				limit = DefaultMaxHeldBytes
			}
			// Held is what was read minus the refused last event.
			if held := src.bytes - len(c.data); held > limit {
				t.Fatalf("held %d bytes, bound %d", held, limit)
			}
		})
	}
}

// TestHeldWithinBoundsReleased: as many bootstrap events as the bound
// allows are all forwarded, in order, when output begins.
func TestHeldWithinBoundsReleased(t *testing.T) {
	var evs [][]byte
	for i := range DefaultMaxHeldEvents {
		evs = append(evs, ev("response.in_progress", i, `,"response":{"id":"resp_1"}`))
	}
	evs = append(evs, ev("response.output_text.delta", 8, `,"delta":"x"`), ev("response.completed", 9, `,"response":{"id":"resp_1","status":"completed"}`))
	sink := &recSink{}
	res := Run(context.Background(), &sliceSource{events: evs}, sink, Options{HoldBootstrap: true})
	if res.End != EndTerminal || len(sink.types) != len(evs) {
		t.Fatalf("end %v err %v sent %v", res.End, res.Err, sink.types)
	}
}

// TestFirstOutputHook: FirstOutput is called once, with the id the
// bootstrap events carried, when the first output event arrives and before
// anything held reaches the client; a refused run never calls it.
func TestFirstOutputHook(t *testing.T) {
	evs := [][]byte{
		ev("response.created", 0, `,"response":{"id":"resp_early"}`),
		ev("response.output_text.delta", 1, `,"delta":"a"`),
		ev("response.output_text.delta", 2, `,"delta":"b"`),
		ev("response.completed", 3, `,"response":{"id":"resp_early","status":"completed"}`),
	}
	sink := &recSink{}
	var calls []string
	sentBefore := -1
	res := Run(context.Background(), &sliceSource{events: evs}, sink, Options{
		HoldBootstrap: true,
		FirstOutput: func(id string) {
			calls = append(calls, id)
			sentBefore = len(sink.types)
		},
	})
	if res.End != EndTerminal || len(calls) != 1 || calls[0] != "resp_early" || sentBefore != 0 {
		t.Fatalf("end %v, calls %q, events sent before the first call %d", res.End, calls, sentBefore)
	}

	refused := [][]byte{
		ev("response.created", 0, `,"response":{"id":"resp_r"}`),
		ev("error", 1, `,"code":"rate_limit_exceeded","message":"slow down"`),
	}
	calls = nil
	res = Run(context.Background(), &sliceSource{events: refused}, &recSink{}, Options{
		HoldBootstrap: true,
		FirstOutput:   func(id string) { calls = append(calls, id) },
	})
	if res.End != EndRefused || len(calls) != 0 {
		t.Fatalf("refused run: end %v, calls %q", res.End, calls)
	}
}
