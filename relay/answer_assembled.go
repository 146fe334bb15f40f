package relay

import (
	"net/http"
	"strconv"

	"github.com/relaykit/responsesrelay/internal/event"
	"github.com/relaykit/responsesrelay/internal/headers"
	"github.com/relaykit/responsesrelay/internal/pump"
	"github.com/relaykit/responsesrelay/scheduler"
)

// A client that asked for JSON, served by an Account.StreamOnly account,
// gets the upstream's stream through the same pump as a streaming client
// (failover before output, idle bounds, model rewrite, the record written
// before the terminal event), with assembledAnswer as its sink: the
// terminal event's "response" becomes the JSON answer, byte for byte.

// assemblesStream reports whether this attempt streams upstream for a
// client that asked for JSON. Compaction and background requests go as
// the client sent them: compaction has no stream form, and a background
// request is answered at once with its queued object.
func (t *turn) assemblesStream(acct *scheduler.Account) bool {
	return acct.StreamOnly && !t.in.req.Stream && t.client.out == nil &&
		!t.in.compact && !t.conv.compactByTrigger && !t.in.req.background
}

// relayAssembled pumps src to the JSON client through an assembledAnswer.
func (t *turn) relayAssembled(sel *scheduler.Selection, src pump.Source, status int, header http.Header, abort func()) *attemptError {
	a := &assembledAnswer{t: t, status: status}
	t.client.out = a
	defer func() { t.client.out = nil }()
	return t.relayEvents(sel, src, status, header, abort)
}

// assembledAnswer is the client end of an assembled turn: it discards
// every event but the terminal one, and answers with that event's
// response. An error before the terminal event is answered as JSON.
type assembledAnswer struct {
	t        *turn
	status   int
	upstream http.Header
}

func (a *assembledAnswer) setUpstreamHeader(h http.Header) { a.upstream = h }

func (a *assembledAnswer) Ping() error { return nil }

func (a *assembledAnswer) fail(e *APIError) { writeJSONError(a.t.client.w, e) }

// Send writes the terminal event's response; the pump sends a terminal
// event at most once, and nothing after it.
func (a *assembledAnswer) Send(typ string, data []byte) error {
	switch typ {
	case event.TypeCompleted, event.TypeIncomplete, event.TypeFailed:
	default:
		return nil
	}
	body := event.RawAt(data, "response")
	w, h := a.t.client.w, a.t.h
	hdr := w.Header()
	headers.Return(hdr, a.upstream, h.ReturnHeaders)
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Content-Length", strconv.Itoa(len(body)))
	status := a.status
	if status == 0 {
		status = http.StatusOK
	}
	dl := writeDeadline{rc: http.NewResponseController(w), timeout: h.clientWriteTimeout()}
	dl.extend()
	defer dl.clear()
	w.WriteHeader(status)
	if _, err := w.Write(body); err != nil {
		return errClientWrite
	}
	return nil
}
