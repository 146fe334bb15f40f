package relay

import (
	"errors"
	"net/http"
)

// turnClient is the client end, set at entry: w for a JSON answer (HTTP,
// stream false), out for events (SSE, or another transport's sink through
// serveMessage). The answer files write through it: answer_json.go to w,
// answer_stream.go to out, fail (below) to whichever the turn has.
type turnClient struct {
	w   http.ResponseWriter
	out eventSink
}

// fail answers err through the client end: a JSON error, an SSE error
// event once the stream is committed, or the other transport's error. A
// client that left is told nothing.
func (t *turn) fail(err error) {
	if errors.Is(err, errClientGone) {
		t.answered(statusClientGone, "client_gone")
		return
	}
	e := answerFor(err)
	t.answered(e.Status, e.Type)
	if t.client.out != nil {
		t.client.out.fail(e)
		return
	}
	writeJSONError(t.client.w, e)
}
