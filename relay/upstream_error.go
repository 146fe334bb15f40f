package relay

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/relaykit/responsesrelay/internal/jsonx"
	"github.com/tidwall/gjson"
)

// UpstreamError is an upstream's failure of an attempt: an error status, a
// refusal inside a 200 answer (response.failed or an error event before any
// output), or no answer at all. An Upstream's Open returns one for a
// refusal with a status; the relay hands one to Handler.MapError for every
// upstream failure a client is told about.
type UpstreamError struct {
	// Status is the upstream's HTTP status (or an error frame's); 0 when
	// it never answered.
	Status int
	Header http.Header
	// Body is the upstream's error body, or the event that refused the
	// turn; keys are masked in it before MapError sees it.
	Body []byte
	// Err is the transport error, when there is one.
	Err error
	// Exhausted reports a failure that moves a turn to another account
	// (connection errors, 401, 402, 403, 408, 429, 529, 5xx, in-band
	// refusals) on the turn's last attempt: failover gave up. Otherwise the
	// error is the request's own (another 4xx), and the built-in mapping
	// passes it through as the upstream said it.
	Exhausted bool

	inBand bool // Body is an in-band refusal: the status is in its code
}

func (e *UpstreamError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("upstream refused with %d: %v", e.Status, e.Err)
	}
	return fmt.Sprintf("upstream refused with %d", e.Status)
}

func (e *UpstreamError) Unwrap() error { return e.Err }

// MapUpstreamError is the built-in answer to an upstream failure, the one
// a nil Handler.MapError uses: the request's own error as the upstream said
// it (masked), or, once failover gave up, a generic error per cause (502,
// 429 with Retry-After, 503 for an overloaded upstream) that tells the
// client nothing about the account. A MapError hook may call it and adjust
// the result, which is the caller's to change.
func MapUpstreamError(e *UpstreamError) *APIError {
	if e.Exhausted {
		return exhaustedError(e)
	}
	return passthroughError(e)
}

// clientError is what the client sees for a failed attempt: MapError's
// answer, or the built-in one. Keys are masked again in whatever the hook
// wrote, and a hook that panics gets the built-in answer.
func (h *Handler) clientError(ae *attemptError, exhausted bool) (e *APIError) {
	if ae.answer != nil {
		return ae.answer
	}
	ue := &UpstreamError{Status: ae.status, Header: ae.header, Body: ae.body, Err: ae.err, Exhausted: exhausted}
	if ae.kind == failInBand {
		ue.Body, ue.inBand = ae.refusal, true
	}
	if h.MapError != nil {
		func() {
			defer func() {
				if p := recover(); p != nil {
					h.log.Error("relay: MapError panicked; using the built-in answer", "panic", fmt.Sprint(p))
					e = nil
				}
			}()
			e = h.MapError(ue)
		}()
		if e != nil {
			// A copy: the hook may return an answer it shares.
			c := *e
			c.Message = string(sanitize([]byte(c.Message), ae.secrets...))
			if c.Raw != nil {
				c.Raw = sanitize(c.Raw, ae.secrets...)
			}
			return &c
		}
	}
	return MapUpstreamError(ue)
}

// passthroughError returns the upstream's error as it said it, sanitized;
// a body that is not an OpenAI error is wrapped into one.
func passthroughError(ue *UpstreamError) *APIError {
	e := &APIError{Status: ue.Status, Type: "invalid_request_error", Message: "Upstream request failed"}
	// A body nested too deep is not passed on, nor quoted: the client's
	// parser may be recursive too.
	if jsonx.DepthExceeds(ue.Body, jsonx.MaxDepth) {
		// the generic message stands
	} else if obj := gjson.GetBytes(ue.Body, "error"); obj.IsObject() {
		e.Raw = ue.Body
		e.Type = obj.Get("type").String()
		e.Message = obj.Get("message").String()
		e.Code = obj.Get("code").String()
		e.Param = obj.Get("param").String()
	} else if len(ue.Body) > 0 {
		e.Message = strings.TrimSpace(string(ue.Body))
		if len(e.Message) > 512 {
			e.Message = e.Message[:512]
		}
	}
	if e.Status == 0 {
		e.Status = http.StatusBadGateway
	}
	return e
}

// exhaustedError maps the last failure once failover gave up.
func exhaustedError(ue *UpstreamError) *APIError {
	status := ue.Status
	if ue.inBand {
		switch code := inBandCode(ue.Body); {
		case strings.Contains(code, "rate_limit"):
			status = http.StatusTooManyRequests
		case strings.Contains(code, "overloaded"):
			status = 529
		default:
			status = 0
		}
	}
	switch {
	case status == 0:
		return &APIError{Status: http.StatusBadGateway, Type: "upstream_error", Message: "Upstream request failed"}
	case status == 401:
		return &APIError{Status: http.StatusBadGateway, Type: "upstream_error", Message: "Upstream authentication failed, please contact administrator"}
	case status == 403:
		return &APIError{Status: http.StatusBadGateway, Type: "upstream_error", Message: "Upstream access forbidden, please contact administrator"}
	case status == 429:
		return &APIError{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Message: "Upstream rate limit exceeded, please retry later",
			RetryAfter: retryAfter(ue.Header)}
	case status == 529:
		return &APIError{Status: http.StatusServiceUnavailable, Type: "upstream_error", Message: "Upstream service overloaded, please retry later", RetryAfter: 30 * time.Second}
	case status >= 500:
		return &APIError{Status: http.StatusBadGateway, Type: "upstream_error", Message: "Upstream service temporarily unavailable"}
	}
	return &APIError{Status: http.StatusBadGateway, Type: "upstream_error", Message: "Upstream request failed"}
}

// retryAfter reads an upstream Retry-After (seconds) for the client; 5 s
// when absent or unreadable, so clients always get a hint.
func retryAfter(h http.Header) time.Duration {
	if h != nil {
		if n, err := strconv.Atoi(strings.TrimSpace(h.Get("Retry-After"))); err == nil && n > 0 {
			return time.Duration(n) * time.Second
		}
	}
	return 5 * time.Second
}
