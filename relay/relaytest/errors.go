package relaytest

import (
	"net/http"
)

const (
	typeInvalidRequest = "invalid_request_error"
	typeAuthentication = "authentication_error"
	typePermission     = "permission_error"
	typeRateLimit      = "rate_limit_error"
	typeServer         = "server_error"
)

// apiError is an HTTP error in OpenAI's shape. Empty param and code are sent
// as null.
type apiError struct {
	status int
	typ    string
	msg    string
	param  string
	code   string
}

var errInvalidJSON = &apiError{status: 400, typ: typeInvalidRequest,
	msg: "We could not parse the JSON body of your request. The OpenAI API expects a JSON payload, but what was sent was not valid JSON."}

func (e *apiError) appendJSON(b []byte) []byte {
	b = append(b, `{"error":{"message":`...)
	b = appendString(b, e.msg)
	b = append(b, `,"type":`...)
	b = appendString(b, e.typ)
	b = append(b, `,"param":`...)
	b = appendStringOrNull(b, e.param)
	b = append(b, `,"code":`...)
	b = appendStringOrNull(b, e.code)
	return append(b, "}}\n"...)
}

// errorForStatus is the error the fake sends for a scripted status without a
// body: the shape real upstreams use for that status.
func errorForStatus(status int) *apiError {
	e := &apiError{status: status, typ: typeInvalidRequest, msg: http.StatusText(status)}
	switch {
	case status == 401:
		e.typ, e.code = typeAuthentication, "invalid_api_key"
		e.msg = "Incorrect API key provided."
	case status == 402:
		e.code = "payment_required"
		e.msg = "You exceeded your current quota, please check your plan and billing details."
	case status == 403:
		e.typ, e.code = typePermission, "unsupported_country_region_territory"
		e.msg = "Country, region, or territory not supported"
	case status == 404:
		e.code = "model_not_found"
		e.msg = "The requested model does not exist or you do not have access to it."
	case status == 408:
		e.typ, e.code = typeServer, "timeout"
		e.msg = "Request timed out."
	case status == 429:
		e.typ, e.code = typeRateLimit, "rate_limit_exceeded"
		e.msg = "Rate limit reached for requests. Please try again in 1s."
	case status == 503 || status == 529:
		e.typ, e.code = typeServer, "server_is_overloaded"
		e.msg = "The server is overloaded or not ready yet."
	case status >= 500:
		e.typ = typeServer
		e.msg = "The server had an error while processing your request. Sorry about that!"
	case e.msg == "":
		e.msg = "Request failed."
	}
	return e
}

// failureMessage is the message of an in-band error with the given code.
func failureMessage(code string) string {
	switch code {
	case "rate_limit_exceeded":
		return "Rate limit reached. Please try again in 1s."
	case "server_is_overloaded":
		return "The server is overloaded. Please try again later."
	case "insufficient_quota":
		return "You exceeded your current quota, please check your plan and billing details."
	default:
		return "An error occurred while processing your request. You can retry your request."
	}
}

// failureType is the error type that goes with an in-band error code.
func failureType(code string) string {
	switch code {
	case "rate_limit_exceeded", "insufficient_quota":
		return typeRateLimit
	case "invalid_prompt", "context_length_exceeded", "previous_response_not_found":
		return typeInvalidRequest
	default:
		return typeServer
	}
}

// keyFragment masks a bearer token the way the real error message does, so
// that relays can be tested for not leaking it.
func keyFragment(k string) string {
	if len(k) < 12 {
		return "sk-***"
	}
	return k[:6] + "..." + k[len(k)-4:]
}
