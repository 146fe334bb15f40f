package relay

import (
	"bytes"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/relaykit/responsesrelay/internal/jsonx"
	"github.com/tidwall/gjson"
)

// ErrorRule rewrites what a client sees for an upstream error: the final
// error after failover is exhausted, or an error that is not failed over.
// A rule matches when its StatusCodes (any; empty matches every status) and
// Keywords (case-insensitive substrings of the upstream body; any of them,
// or all with MatchAllKeywords; empty matches every body) both match.
type ErrorRule struct {
	Name             string
	Priority         int // lower is tried first; ties keep slice order
	StatusCodes      []int
	Keywords         []string
	MatchAllKeywords bool

	// PassStatus answers with the upstream's status instead of the mapped one.
	PassStatus bool
	// PassBody answers with the upstream's (sanitized) body.
	PassBody bool
	// Status, Type, Message replace the mapped answer's fields when set.
	Status  int
	Type    string
	Message string
}

func (r *ErrorRule) matches(status int, body []byte) bool {
	if len(r.StatusCodes) > 0 {
		ok := false
		for _, s := range r.StatusCodes {
			ok = ok || s == status
		}
		if !ok {
			return false
		}
	}
	if len(r.Keywords) == 0 {
		return true
	}
	lower := bytes.ToLower(body)
	hits := 0
	for _, k := range r.Keywords {
		if bytes.Contains(lower, []byte(strings.ToLower(k))) {
			hits++
		}
	}
	if r.MatchAllKeywords {
		return hits == len(r.Keywords)
	}
	return hits > 0
}

// clientError is what the client sees for a failed attempt: the upstream's
// own error for a non-failover 4xx, or the exhausted mapping, then the first
// matching ErrorRule.
func (h *Handler) clientError(ae *attemptError, exhausted bool) *APIError {
	var e *APIError
	if exhausted {
		e = exhaustedError(ae)
	} else {
		e = passthroughError(ae)
	}
	status, body := ae.status, ae.body
	if ae.kind == failInBand && ae.refusal != nil {
		body = ae.refusal
	}
	if r := h.matchRule(status, body); r != nil {
		if r.PassStatus && status > 0 {
			e.Status = status
		}
		if r.PassBody && len(body) > 0 && validJSON(body) {
			e.Raw = body
		}
		if r.Status > 0 {
			e.Status = r.Status
		}
		if r.Type != "" {
			e.Type = r.Type
			e.Raw = nil
		}
		if r.Message != "" {
			e.Message = r.Message
			e.Raw = nil
		}
	}
	return e
}

func (h *Handler) matchRule(status int, body []byte) *ErrorRule {
	if len(h.ErrorRules) == 0 {
		return nil
	}
	idx := make([]int, len(h.ErrorRules))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return h.ErrorRules[idx[a]].Priority < h.ErrorRules[idx[b]].Priority })
	for _, i := range idx {
		if h.ErrorRules[i].matches(status, body) {
			return &h.ErrorRules[i]
		}
	}
	return nil
}

// passthroughError returns the upstream's error as it said it, sanitized;
// a body that is not an OpenAI error is wrapped into one.
func passthroughError(ae *attemptError) *APIError {
	e := &APIError{Status: ae.status, Type: "invalid_request_error", Message: "Upstream request failed"}
	// A body nested too deep is not passed on, nor quoted: the client's
	// parser may be recursive too.
	if jsonx.DepthExceeds(ae.body, jsonx.MaxDepth) {
		// the generic message stands
	} else if obj := gjson.GetBytes(ae.body, "error"); obj.IsObject() {
		e.Raw = ae.body
		e.Type = obj.Get("type").String()
		e.Message = obj.Get("message").String()
		e.Code = obj.Get("code").String()
		e.Param = obj.Get("param").String()
	} else if len(ae.body) > 0 {
		e.Message = strings.TrimSpace(string(ae.body))
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
func exhaustedError(ae *attemptError) *APIError {
	status := ae.status
	if ae.kind == failInBand {
		switch code := inBandCode(ae.refusal); {
		case strings.Contains(code, "rate_limit"):
			status = http.StatusTooManyRequests
		case strings.Contains(code, "overloaded"):
			status = 529
		default:
			status = 0
		}
	}
	switch {
	case ae.kind == failConn || ae.kind == failCredentials || (ae.kind == failInBand && status == 0):
		return &APIError{Status: http.StatusBadGateway, Type: "upstream_error", Message: "Upstream request failed"}
	case status == 401:
		return &APIError{Status: http.StatusBadGateway, Type: "upstream_error", Message: "Upstream authentication failed, please contact administrator"}
	case status == 403:
		return &APIError{Status: http.StatusBadGateway, Type: "upstream_error", Message: "Upstream access forbidden, please contact administrator"}
	case status == 429:
		return &APIError{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Message: "Upstream rate limit exceeded, please retry later",
			RetryAfter: retryAfter(ae.header)}
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
