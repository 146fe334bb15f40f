package event

import "github.com/tidwall/gjson"

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
func ParseResponse(obj gjson.Result) Response {
	r := Response{
		ID:          obj.Get("id").String(),
		Status:      obj.Get("status").String(),
		Model:       obj.Get("model").String(),
		ServiceTier: obj.Get("service_tier").String(),
		ErrorCode:   obj.Get("error.code").String(),
	}
	if u := obj.Get("usage"); u.IsObject() {
		r.Usage = Usage{
			Present:     true,
			Input:       u.Get("input_tokens").Int(),
			CachedInput: u.Get("input_tokens_details.cached_tokens").Int(),
			Output:      u.Get("output_tokens").Int(),
			Reasoning:   u.Get("output_tokens_details.reasoning_tokens").Int(),
			Total:       u.Get("total_tokens").Int(),
		}
		if r.Usage.Total == 0 {
			r.Usage.Total = r.Usage.Input + r.Usage.Output
		}
	}
	return r
}

// ParseEventResponse reads the "response" object of an event's JSON (terminal
// events and response.created carry one).
func ParseEventResponse(data []byte) Response {
	return ParseResponse(gjson.GetBytes(data, "response"))
}

// ParseBody reads a non-streaming JSON response body.
func ParseBody(body []byte) Response {
	return ParseResponse(gjson.ParseBytes(body))
}
