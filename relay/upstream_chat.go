package relay

import (
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/relaykit/responsesrelay/internal/chat"
	"github.com/relaykit/responsesrelay/internal/event"
	"github.com/relaykit/responsesrelay/internal/jsonx"
	"github.com/relaykit/responsesrelay/scheduler"
)

// A Chat Completions account (Account.WireAPI "chat") gets each turn
// translated (internal/chat): the body on its way up, and the answer (a
// JSON object, or SSE chunks) back into the Responses object or events the
// client asked for. Its upstream keeps no state, so a previous_response_id
// is always sent whole from the relay's records (conversation_chain.go).

func isChat(a *scheduler.Account) bool { return a.WireAPI == "chat" }

// chatBody is a Responses body as a Chat Completions one. What has no Chat
// form (a built-in tool, an item reference) is the client's 400, naming
// it; compaction (v1 or by trigger) has no Chat form either.
func (t *turn) chatBody(body []byte, sel *scheduler.Selection) ([]byte, error) {
	if t.in.compact {
		return nil, &APIError{Status: http.StatusBadRequest, Type: "invalid_request_error",
			Message: "Compaction is not available on this account"}
	}
	model := sel.UpstreamModel
	if model == "" {
		model = t.in.req.Model
	}
	out, err := chat.Request(body, model)
	if err != nil {
		if ue, ok := errors.AsType[*chat.UnsupportedError](err); ok {
			return nil, &APIError{Status: http.StatusBadRequest, Type: "invalid_request_error", Message: ue.Error(), Param: ue.Param}
		}
		return nil, &APIError{Status: http.StatusBadRequest, Type: "invalid_request_error", Message: err.Error()}
	}
	return out, nil
}

// chatJSON turns a Chat Completions answer into the Responses object.
func (t *turn) chatJSON(body []byte) ([]byte, error) {
	out, err := chat.Response(body, nil, t.in.req.Model, chat.Echo(t.in.req.Body))
	if errors.Is(err, chat.ErrNoUsage) {
		t.conv.chatNoUsage = true
		err = nil
	}
	return out, err
}

// chatSource reads a Chat Completions SSE stream and gives the pump the
// Responses events it translates to, a batch per chunk.
type chatSource struct {
	t    *turn
	up   *sseSource
	st   *chat.Stream
	ev   chat.Events
	i    int
	end  error      // returned once the batch is out
	read int        // payload bytes read: the translation holds the whole output
	info event.Info // of the event Next returned last
}

// errChatTooLarge ends a chat stream whose output grew past MaxEventBytes:
// its terminal event, which carries the whole output, could not be sent.
var errChatTooLarge = errors.New("upstream chat stream larger than MaxEventBytes")

func (t *turn) newChatSource(up *sseSource) *chatSource {
	st := chat.NewStream(nil, t.in.req.Model, time.Now().Unix())
	st.Echo(chat.Echo(t.in.req.Body))
	return &chatSource{t: t, up: up, st: st}
}

// Pending reports a translated event, or a whole chunk buffered upstream.
func (s *chatSource) Pending() bool { return s.i < s.ev.Len() || s.up.Pending() }

func (s *chatSource) Next() ([]byte, error) {
	for s.i >= s.ev.Len() {
		if s.end != nil {
			return nil, s.end
		}
		s.ev.Reset()
		s.i = 0
		data, err := s.up.Next()
		switch {
		case err == io.EOF:
			if s.st.Done() {
				return nil, io.EOF
			}
			switch e := s.st.End(&s.ev); {
			case e == nil:
			case errors.Is(e, chat.ErrNoUsage):
				s.t.conv.chatNoUsage = true
			case !s.st.HasOutput():
				return nil, io.ErrUnexpectedEOF // before output: failover
			default:
				// Cut short after output: the relay's response.failed
				// ends the client's stream, but the upstream broke (as an
				// EOF does on a Responses stream) and sent no usage.
				s.st.Fail(&s.ev, "stream_error", "The upstream stream ended before the response was complete")
				s.t.conv.chatNoUsage = true
			}
			s.end = io.EOF
			continue
		case err != nil:
			return nil, err
		}
		if s.read += len(data); s.read > s.t.h.maxEventBytes() {
			return nil, errChatTooLarge
		}
		if err := s.st.Push(&s.ev, data); err != nil {
			var ue *chat.UpstreamError
			switch {
			case errors.Is(err, chat.ErrNoUsage):
				s.t.conv.chatNoUsage = true
			case errors.As(err, &ue) && !s.st.HasOutput():
				// An error chunk before output is a refusal: the pump
				// fails the turn over.
				return s.errorEvent(ue), nil
			case errors.As(err, &ue):
				s.st.Fail(&s.ev, ue.Code, ue.Message)
				s.end = io.EOF
			default:
				return nil, err
			}
		}
	}
	b := s.ev.At(s.i)
	s.info = s.ev.Info(s.i)
	s.i++
	return b, nil
}

// NextClassified is Next with the classification of the events the
// translation wrote (pump.ClassifiedSource): the pump need not read them
// again. An error event made of an upstream error chunk it classifies.
func (s *chatSource) NextClassified() ([]byte, event.Info, error) {
	b, err := s.Next()
	if err != nil {
		return nil, event.Info{}, err
	}
	return b, s.info, nil
}

// errorEvent is an upstream error chunk as a Responses error event.
func (s *chatSource) errorEvent(ue *chat.UpstreamError) []byte {
	b := []byte(`{"type":"error","sequence_number":0,"code":`)
	b = jsonx.AppendStringOrNull(b, ue.Code)
	b = append(b, `,"message":`...)
	b = jsonx.AppendString(b, ue.Message)
	b = append(b, `,"param":null}`...)
	s.end = io.EOF
	s.info = event.Info{}
	return b
}
