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
	var seen uint8 // a bit per field read
	str := func(bit uint8, dst *string, v gjson.Result) {
		if seen&bit == 0 {
			seen |= bit
			*dst = strings.Clone(v.String())
		}
	}
	obj.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "id":
			str(1, &r.ID, v)
		case "status":
			str(2, &r.Status, v)
		case "model":
			str(4, &r.Model, v)
		case "service_tier":
			str(8, &r.ServiceTier, v)
		case "error":
			// As gjson reads the path error.code: the first "error" that
			// has a code.
			if seen&16 == 0 {
				if c := v.Get("code"); c.Exists() {
					str(16, &r.ErrorCode, c)
				}
			}
		case "usage":
			if seen&32 == 0 {
				seen |= 32
				if v.IsObject() {
					r.Usage = parseUsage(v)
				}
			}
		}
		return seen != 63
	})
	return r
}

func parseUsage(u gjson.Result) Usage {
	return NewUsage(u.Get("input_tokens").Int(), u.Get("input_tokens_details.cached_tokens").Int(),
		u.Get("output_tokens").Int(), u.Get("output_tokens_details.reasoning_tokens").Int(), u.Get("total_tokens").Int())
}

// NewUsage is the usage an upstream reported: total as given, or input
// plus output when it gave none.
func NewUsage(input, cachedInput, output, reasoning, total int64) Usage {
	if total == 0 {
		total = input + output
	}
	return Usage{Present: true, Input: input, CachedInput: cachedInput, Output: output, Reasoning: reasoning, Total: total}
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
