package pump

import (
	"context"
	"io"
	"strings"
	"testing"
)

// burstSource is a sliceSource whose events arrive in bursts: Pending is
// true inside a burst, false at its last event (where a real reader would
// block).
type burstSource struct {
	sliceSource
	burstEnds map[int]bool // indexes (1-based count of events read) that end a burst
}

func (s *burstSource) Pending() bool { return s.i < len(s.events) && !s.burstEnds[s.i] }

// batchSink records writes and flushes in order: "w" for a buffered
// write, "W" for a flushed one, "F" for a flush.
type batchSink struct {
	recSink
	ops []string
}

func (s *batchSink) Send(typ string, data []byte) error {
	s.ops = append(s.ops, "W")
	return s.recSink.Send(typ, data)
}

func (s *batchSink) SendBuffered(typ string, data []byte) error {
	s.ops = append(s.ops, "w")
	return s.recSink.Send(typ, data)
}

func (s *batchSink) Flush() error {
	s.ops = append(s.ops, "F")
	return nil
}

// TestBatchFlushesAtBurstEnds: events inside a burst are written without
// a flush; the last event of each burst is flushed, so nothing waits in a
// buffer while the upstream is silent.
func TestBatchFlushesAtBurstEnds(t *testing.T) {
	evs := append(created(),
		ev("response.output_text.delta", 2, `,"delta":"a"`),
		ev("response.output_text.delta", 3, `,"delta":"b"`),
		ev("response.output_text.delta", 4, `,"delta":"c"`),
		ev("response.completed", 5, `,"response":{"id":"resp_1","status":"completed","usage":{"input_tokens":1,"output_tokens":3,"total_tokens":4}}`),
	)
	// Bursts: [created in_progress delta] [delta delta] [completed].
	src := &burstSource{sliceSource: sliceSource{events: evs}, burstEnds: map[int]bool{3: true, 5: true}}
	sink := &batchSink{}
	res := Run(context.Background(), src, sink, Options{HoldBootstrap: true})
	if res.End != EndTerminal || len(sink.types) != 6 {
		t.Fatalf("end %v, types %v", res.End, sink.types)
	}
	// The held events go out with the first delta, whose read ended a
	// burst: all three flushed with it (two buffered, the last flushed).
	if got, want := strings.Join(sink.ops, ""), "wwWwWW"; got != want {
		t.Fatalf("ops %s, want %s", got, want)
	}
}

// TestBatchFlushesTerminal: the terminal event is flushed even when the
// source reports more (bytes after the terminal), so "delivered" holds.
func TestBatchFlushesTerminal(t *testing.T) {
	evs := append(created(),
		ev("response.output_text.delta", 2, `,"delta":"a"`),
		ev("response.completed", 3, `,"response":{"id":"resp_1","status":"completed"}`),
		ev("response.output_text.delta", 4, `,"delta":"after the end"`),
	)
	src := &burstSource{sliceSource: sliceSource{events: evs}}
	sink := &batchSink{}
	Run(context.Background(), src, sink, Options{HoldBootstrap: true})
	if got, want := strings.Join(sink.ops, ""), "wwwW"; got != want {
		t.Fatalf("ops %s, want %s", got, want)
	}
}

// TestBatchFlushesBrokenStream: a stream that breaks inside a burst ends
// with its response.failed flushed.
func TestBatchFlushesBrokenStream(t *testing.T) {
	evs := append(created(),
		ev("response.output_text.delta", 2, `,"delta":"a"`),
		ev("response.output_text.delta", 3, `,"delta":"b"`),
	)
	src := &burstSource{sliceSource: sliceSource{events: evs, err: io.ErrUnexpectedEOF}}
	src.burstEnds = map[int]bool{}
	sink := &batchSink{}
	res := Run(context.Background(), src, sink, Options{HoldBootstrap: true})
	if res.End != EndBroken {
		t.Fatalf("end %v", res.End)
	}
	ops := strings.Join(sink.ops, "")
	if last := ops[len(ops)-1]; last != 'W' && last != 'F' {
		t.Fatalf("ops %s: the end was not flushed", ops)
	}
}
