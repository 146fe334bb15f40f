package relay

import (
	"errors"
	"net/http"

	"github.com/relaykit/responsesrelay/billing"

	"github.com/relaykit/responsesrelay/internal/jsonx"
	"github.com/tidwall/gjson"
	"strconv"
	"time"
)

// APIError is an error answered to the client in OpenAI's shape:
// {"error":{"message":...,"type":...,"param":...,"code":...}}.
type APIError struct {
	Status  int
	Type    string
	Message string
	Param   string // "" is null
	Code    string // "" is null
	// RetryAfter, when > 0, is sent as Retry-After (whole seconds).
	RetryAfter time.Duration
	// Raw, when set, is sent as the body instead of the fields above
	// (an upstream error passed through, already sanitized).
	Raw []byte
}

func (e *APIError) Error() string {
	return "relay: " + strconv.Itoa(e.Status) + " " + e.Type + ": " + e.Message
}

// JSON is the error body.
func (e *APIError) JSON() []byte {
	if e.Raw != nil {
		return e.Raw
	}
	b := make([]byte, 0, 96+len(e.Message))
	b = append(b, `{"error":{"message":`...)
	b = jsonx.AppendString(b, e.Message)
	b = append(b, `,"type":`...)
	b = jsonx.AppendString(b, e.Type)
	b = append(b, `,"param":`...)
	b = appendNullable(b, e.Param)
	b = append(b, `,"code":`...)
	b = appendNullable(b, e.Code)
	return append(b, "}}"...)
}

// eventJSON is the error as an SSE "error" event for a stream already
// committed to 200 before any response event: the nested shape, which
// clients report as a stream error.
func (e *APIError) eventJSON() []byte {
	b := make([]byte, 0, 128+len(e.Message))
	b = append(b, `{"type":"error","sequence_number":0,"status":`...)
	b = strconv.AppendInt(b, int64(e.Status), 10)
	b = append(b, `,"error":`...)
	inner := e.JSON()
	if e.Raw != nil {
		// A passed-through body is already {"error":{...}}; unwrap it.
		if v := errorObject(inner); v != nil {
			inner = v
		} else {
			inner = (&APIError{Status: e.Status, Type: e.Type, Message: e.Message}).JSON()
			inner = errorObject(inner)
		}
	} else {
		inner = errorObject(inner)
	}
	b = append(b, inner...)
	return append(b, '}')
}

func (e *APIError) retryAfterHeader() string {
	if e.RetryAfter <= 0 {
		return ""
	}
	return strconv.FormatInt(int64((e.RetryAfter+time.Second-1)/time.Second), 10)
}

func appendNullable(b []byte, s string) []byte { return jsonx.AppendStringOrNull(b, s) }

// WriteError answers e as an OpenAI-shaped JSON error, with Retry-After
// when e has one. Hosts use it for their own routes (404, 401, 426) so that
// every error a client sees has the same shape. The response must not be
// committed yet.
func WriteError(w http.ResponseWriter, e *APIError) { writeJSONError(w, e) }

func writeJSONError(w http.ResponseWriter, e *APIError) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	if ra := e.retryAfterHeader(); ra != "" {
		h.Set("Retry-After", ra)
	}
	w.WriteHeader(e.Status)
	w.Write(e.JSON())
}

func errInvalid(msg, param string) *APIError {
	return &APIError{Status: http.StatusBadRequest, Type: "invalid_request_error", Message: msg, Param: param}
}

// errorObject returns the raw "error" object of an {"error":{...}} body, or
// nil when body has none.
func errorObject(body []byte) []byte {
	v := gjson.GetBytes(body, "error")
	if !v.IsObject() {
		return nil
	}
	return []byte(v.Raw)
}

// denialError is the client's answer for a Gate's Denial, its zero fields
// taking the defaults billing.Denial documents.
func denialError(d *billing.Denial) *APIError {
	e := &APIError{Status: d.Status, Type: d.Type, Code: d.Code, Message: d.Message, RetryAfter: roundUp(d.RetryAfter)}
	if e.Status == 0 {
		e.Status = http.StatusTooManyRequests
	}
	if e.Type == "" {
		e.Type = "insufficient_quota"
		if e.Code == "" {
			e.Code = "insufficient_quota"
		}
	}
	if e.Message == "" {
		e.Message = "Request denied by billing policy"
	}
	return e
}

// answerFor is the one place an error becomes the client's answer: an
// *APIError (a hook's, or the relay's own) as it is, a Gate's
// *billing.Denial with its defaults, anything else a 500 that says
// nothing of the cause.
func answerFor(err error) *APIError {
	if e, ok := errors.AsType[*APIError](err); ok {
		return e
	}
	if d, ok := errors.AsType[*billing.Denial](err); ok {
		return denialError(d)
	}
	return &APIError{Status: http.StatusInternalServerError, Type: "server_error", Message: "Internal error"}
}
