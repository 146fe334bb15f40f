// Package chat translates between the Responses API and Chat Completions,
// so that an upstream speaking only Chat Completions can answer Responses
// requests.
//
// Request maps a validated Responses create body to a Chat Completions body
// and refuses, with an *UnsupportedError, anything that has no Chat form
// (built-in tools, item references, stored prompts), rather than dropping it.
// Response maps a non-streaming Chat Completions answer back to a Responses
// object, and Stream maps a Chat Completions SSE stream, one data: payload at
// a time, to the Responses event sequence. The relay makes its own ids for
// the response and its items (see IDs); a function call's call_id is the
// upstream tool call id, so that the client's function_call_output answers
// the id the upstream expects.
//
// Both directions share one model of the output (output.go): Response feeds
// the same state machine the stream feeds, so the terminal event of a stream
// and the JSON answer for the same content are the same object.
package chat
