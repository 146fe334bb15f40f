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
//   - When "include" lists "reasoning.encrypted_content", the output starts
//     with a reasoning item {"type":"reasoning","id":"rs_…","summary":[],
//     "encrypted_content":"gAAAAA…"} (streamed as output_item.added and
//     done; the answer follows at output_index 1). A compaction_trigger
//     item as the last input item asks for a compaction instead, whatever
//     the tools or Step.FunctionCall: the output is exactly one
//     {"type":"compaction","id":"cmp_…","encrypted_content":…} item (a
//     trigger elsewhere is a 400, param input).
//   - Encrypted content is Fernet-shaped (URL-safe base64 with padding of
//     version byte 0x80, timestamp, IV, ciphertext, HMAC) and bound to the
//     account that made it, through a key derived from the account's name:
//     it stays valid across Reset and Servers. A reasoning or compaction
//     input item whose non-null encrypted_content another account made, or
//     that is not such a blob, or of the other kind, fails the request with
//     400 invalid_encrypted_content (param null). One without it fails
//     with 400 "Item with id '…' not found." (param input; with store:false
//     the message adds the real API's hint), unless store is true and the
//     item is of a response this account stored.
//   - Headers include x-request-id, openai-processing-ms and x-ratelimit-*.
//
// # WebSocket mode
//
// GET on the responses path with WebSocket upgrade headers opens the
// Responses API's WebSocket mode (Server.WSURL gives the ws:// URL); a GET
// without them answers 426 Upgrade Required. The bearer token is checked
// before the upgrade (401 as over HTTP). Then:
//
//   - Each text message {"type":"response.create", ...} is a turn with the
//     same body fields as a POST (stream is implied; a non-boolean stream is
//     still invalid). Its events are text messages carrying exactly the JSON
//     of the SSE data: lines, sequence numbers included; the connection stays
//     open after the terminal event.
//   - One response at a time: a response.create while a turn runs (code
//     response_in_progress), a request that fails validation as over HTTP,
//     another message type such as the retired response.append (code
//     unsupported_event_type) or a message that is not a JSON object is
//     answered with an error message
//     {"type":"error","status":400,"error":{"type","code","message","param"}}
//     and the connection stays open. A binary message closes the connection
//     with 1008 (policy violation); a message over 64 MiB with 1009.
//   - The connection keeps its last completed or incomplete response, which
//     previous_response_id always resolves, even with store:false. Other ids
//     resolve from the account's stored responses, as over HTTP, so a
//     store:false response does not chain on another connection. A turn
//     that ends otherwise (error message, response.failed, error event)
//     evicts the id it continued, as the real service does.
//   - Reasoning, compaction and encrypted content act as over HTTP; their
//     400s are error messages.
//   - "generate": false is a warm-up: response.created and
//     response.completed of a chainable response with no output. Its input
//     tokens are counted (so that the next turn shows them as cached); its
//     output tokens are 0.
//   - A connection older than the age limit (60 minutes; see
//     Upstream.WSMaxAge)
//     answers its next response.create with websocket_connection_limit_reached
//     and closes with 1000.
//
// Every response.create takes a Step from the account's script, like a POST;
// see Step for how each field acts on a WebSocket turn. The upgrade request
// takes the steps marked Step.Upgrade, from their own queue, so that one
// script means the same thing on both transports.
//
// Requests lists the upgrade (Method GET) and then every message (Method
// "WS", Body the message); Served has an entry with WebSocket set for the
// upgrade (Status "upgraded", HTTPStatus 101) and for every message.
// InFlight counts turns, WSConns open connections.
//
// # Scripting
//
// Script queues Steps per account, one per request in arrival order;
// SetDefault sets the Step used when the queue is empty. A Step turns the
// answer into an HTTP error, an in-band failure or an unfinished turn
// (End), holds or cuts it before anything or after N events (After, Hold,
// Cut), slows its first token, paces or pads its events, or changes their
// SSE framing. The zero Step is the normal behaviour.
//
//	srv := relaytest.NewServer()
//	defer srv.Close()
//	srv.Script("a", relaytest.Step{Status: 429, Header: http.Header{"Retry-After": {"2"}}})
//	srv.Script("b", relaytest.Step{After: 4, Cut: true})
//	srv.Script("c", relaytest.Step{End: "refused", Code: "server_is_overloaded"})
//	srv.SetDefault("d", relaytest.Step{Upgrade: true, Status: 426}) // no WebSockets
//
// # Observing
//
// Requests lists what arrived, Served how each request was answered
// (response id, status, usage, events written; Seq names the request), and
// InFlight and MaxInFlight the concurrency seen per account. Wait blocks
// until a condition on them holds, so tests need no sleeps; Step.Hold keeps
// requests in flight until the test releases them.
//
// ReadSSE parses an SSE body, for checking what a relay sent to its client.
package relaytest
