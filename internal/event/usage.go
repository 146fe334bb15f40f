package event

import (
	"strings"

	"github.com/tidwall/gjson"
)

// Usage is the token accounting of one response.
type Usage struct {
	Input, CachedInput, Output, Reasoning, Total int64
	Present                                      bool // a usage object was there
}

// Response is what a relay keeps from a response object (a terminal event's
// "response", or a non-streaming JSON body).
type Response struct {
	ID          string
	Status      string // completed, incomplete, failed, ...
	Model       string
	ServiceTier string
	Usage       Usage
	ErrorCode   string // response.error.code, when failed
}

// ParseResponse reads a response object. The strings are copies.
//
// It walks the object's members once: a response carries its whole output
// (every item, all of the text) before service_tier and usage, and a
// lookup per field walked past all of it again each time. Each field is
// its first occurrence, as gjson's Get reads it
// (FuzzParseResponseAsGJSON).
func ParseResponse(obj gjson.Result) Response {
	var r Response
	var seen uint8
	first := func(bit uint8) bool {
		if seen&bit != 0 {
			return false
		}
		seen |= bit
		return true
	}
	obj.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "id":
			if first(1) {
				r.ID = strings.Clone(v.String())
			}
		case "status":
			if first(2) {
				r.Status = strings.Clone(v.String())
			}
		case "model":
			if first(4) {
				r.Model = strings.Clone(v.String())
			}
		case "service_tier":
			if first(8) {
				r.ServiceTier = strings.Clone(v.String())
			}
		case "error":
			// As gjson reads the path error.code: the first "error" that
			// has a code.
			if seen&16 == 0 {
				if c := v.Get("code"); c.Exists() {
					seen |= 16
					r.ErrorCode = strings.Clone(c.String())
				}
			}
		case "usage":
			if first(32) && v.IsObject() {
				r.Usage = parseUsage(v)
			}
		}
		return seen != 63
	})
	return r
}

func parseUsage(u gjson.Result) Usage {
	use := Usage{
		Present:     true,
		Input:       u.Get("input_tokens").Int(),
		CachedInput: u.Get("input_tokens_details.cached_tokens").Int(),
		Output:      u.Get("output_tokens").Int(),
		Reasoning:   u.Get("output_tokens_details.reasoning_tokens").Int(),
		Total:       u.Get("total_tokens").Int(),
	}
	if use.Total == 0 {
		use.Total = use.Input + use.Output
	}
	return use
}

// ParseEventResponse reads the "response" object of an event's JSON (terminal
// events and response.created carry one), without copying it.
func ParseEventResponse(data []byte) Response {
	return ParseResponse(gjson.Get(bytesToString(data), "response"))
}

// ParseBody reads a non-streaming JSON response body, without copying it.
func ParseBody(body []byte) Response {
	return ParseResponse(gjson.Parse(bytesToString(body)))
}
