// Package relaytest provides a scriptable fake of the OpenAI Responses API,
// for tests, benchmarks and demos of code that talks to it, in the spirit of
// net/http/httptest.
//
// An Upstream is an http.Handler; a Server is an Upstream listening on a
// loopback address. Each serves POST /v1/responses for the account "" and
// POST /{account}/v1/responses for any other account name, so one Server
// stands in for a whole pool of upstream accounts: give each pool account
// the base URL Server.BaseURL(name).
//
// # Normal behaviour
//
// Unless scripted, the fake answers as the real API does, deterministically:
//
//   - It requires "Authorization: Bearer <token>" (401 otherwise; SetKey
//     pins the token of an account) and validates the body: model required,
//     stream and store booleans, previous_response_id known to this account
//     (400 previous_response_not_found otherwise), function_call_output
//     items matching a function call (400 otherwise).
//   - The answer is "Echo: <last user text>". When the request has a
//     function tool and its last input item is a user message, the answer is
//     a function call of the first function tool instead; a last input item
//     that is a function_call_output is answered with text quoting it.
//   - stream:true answers with SSE events in the documented order
//     (response.created, response.in_progress, output item and content part
//     events, text or argument deltas, done events, response.completed) with
//     sequence numbers from 0; stream:false answers with the response object.
//   - Usage is derived from the request as described on Usage.
//   - Responses created with store:true (the default) are kept per account
//     for previous_response_id. With store:false nothing is kept.
//   - Headers include x-request-id, openai-processing-ms and x-ratelimit-*.
//
// GET on the responses path answers 426 Upgrade Required, which makes
// WebSocket clients fall back to HTTP.
//
// # Scripting
//
// Script queues Steps per account, one per request in arrival order;
// SetDefault sets the Step used when the queue is empty. A Step turns the
// answer into an HTTP error, a reset or hung connection, an in-band failure,
// a stream cut or stalled after N events, a slow first token, large events or
// unusual SSE framing. The zero Step is the normal behaviour.
//
//	srv := relaytest.NewServer()
//	defer srv.Close()
//	srv.Script("a", relaytest.Step{Status: 429, Header: http.Header{"Retry-After": {"2"}}})
//	srv.Script("b", relaytest.Step{ResetAfterEvents: 4})
//
// # Observing
//
// Requests lists what arrived, Served how each request was answered
// (response id, status, usage, events written), and InFlight and MaxInFlight
// the concurrency seen per account. WaitRequests, WaitServed and
// WaitInFlight block until something happened, so tests need no sleeps;
// Step.Hold keeps requests in flight until the test releases them.
//
// ReadSSE parses an SSE body, for checking what a relay sent to its client.
package relaytest
