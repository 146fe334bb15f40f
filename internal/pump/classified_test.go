package pump

import (
	"context"
	"slices"
	"testing"

	"github.com/relaykit/responsesrelay/internal/event"
)

// classifiedSource gives each event of a sliceSource with infos[i] as its
// classification.
type classifiedSource struct {
	sliceSource
	infos []event.Info
}

func (s *classifiedSource) NextClassified() ([]byte, event.Info, error) {
	b, err := s.Next()
	if err != nil {
		return nil, event.Info{}, err
	}
	return b, s.infos[s.i-1], nil
}

// The pump takes a ClassifiedSource's classification as it stands, and
// classifies (and checks) only the events the source left unclassified.
func TestClassifiedSource(t *testing.T) {
	out := ev("response.output_text.delta", 2, `,"delta":"a"`)
	// Classified, the delta goes out under the type the source gave it,
	// as output; the terminal event ends the run.
	src := &classifiedSource{
		sliceSource: sliceSource{events: append(created(), out, ev("response.completed", 3, `,"response":{"id":"resp_1"}`))},
		infos: []event.Info{
			{Kind: event.KindBootstrap, Type: event.TypeCreated, Seq: 0},
			{Kind: event.KindBootstrap, Type: event.TypeInProgress, Seq: 1},
			{Kind: event.KindOutput, Type: "told.by.source", Seq: 2},
			{Kind: event.KindTerminal, Type: event.TypeCompleted, Seq: 3},
		},
	}
	sink := &recSink{}
	res := Run(context.Background(), src, sink, Options{HoldBootstrap: true})
	want := []string{"response.created", "response.in_progress", "told.by.source", "response.completed"}
	if res.End != EndTerminal || !slices.Equal(sink.types, want) || res.ResponseID != "resp_1" {
		t.Fatalf("end %v, types %v, id %q", res.End, sink.types, res.ResponseID)
	}
	// Left unclassified, an event is read and checked as any other: one
	// that is not an object breaks the stream.
	src = &classifiedSource{
		sliceSource: sliceSource{events: append(created(), out, []byte(`"not an object"`))},
		infos:       []event.Info{{Kind: event.KindBootstrap, Type: event.TypeCreated}, {}, {}, {}},
	}
	sink = &recSink{}
	res = Run(context.Background(), src, sink, Options{HoldBootstrap: true})
	want = []string{"response.created", "response.in_progress", "response.output_text.delta", "response.failed"}
	if res.End != EndBroken || res.Err != ErrMalformedEvent || !slices.Equal(sink.types, want) {
		t.Fatalf("end %v, err %v, types %v", res.End, res.Err, sink.types)
	}
}
