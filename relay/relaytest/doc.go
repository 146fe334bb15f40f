// Package relaytest provides a scriptable fake of the OpenAI Responses API,
// for tests, benchmarks and demos of code that talks to it, in the spirit of
// net/http/httptest.
//
// An Upstream is an http.Handler; a Server is an Upstream listening on a
// loopback address. Each serves POST /v1/responses for the account "" and
// POST /{account}/v1/responses for any other account name, so one Server
// stands in for a whole pool of upstream accounts: give each pool account
// the base URL Server.BaseURL(name). The other routes of the API are served
// under the same prefixes (see Other routes), and so is POST
// /chat/completions, for relays that translate to Chat Completions
// upstreams (see Chat Completions).
//
// # Normal behaviour
//
// Unless scripted, the fake answers as the real API does, deterministically:
//
//   - It requires "Authorization: Bearer <token>" or an "api-key" header
//     (401 otherwise; SetKey pins the token of an account) and validates
//     the body: model required,
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
//     for previous_response_id and the routes below (the oldest forgotten
//     beyond 65536 responses or 256 MiB of request bodies). With
//     store:false nothing is kept.
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
// # Other routes
//
// Under each account's base URL, with the bearer token checked as for a
// create (401 otherwise) and 405 for another method:
//
//   - GET /responses/{id}: the response object as the JSON body of a
//     non-streaming create was, with its current status. Only responses
//     created with store:true are kept, per account; another account's id,
//     an unknown or a deleted one answers 404
//     {"error":{"message":"Response with id '…' not found.",
//     "type":"invalid_request_error","param":null,"code":null}}. A response
//     not in background mode is shown as it ends (the fake decides it up
//     front), even while its stream is still being written. With
//     ?stream=true its events are sent as SSE, exactly as the streaming
//     create wrote them, skipping those whose sequence number is at most
//     starting_after (a negative or non-integer value is a 400, param
//     starting_after); for a background response still running, events
//     follow as they are produced, until the job ends.
//   - DELETE /responses/{id}: {"id":…,"object":"response","deleted":true};
//     the response is forgotten (later lookups 404, previous_response_id
//     to it is previous_response_not_found) and its background job stops.
//   - GET /responses/{id}/input_items: {"object":"list","data":[…],
//     "first_id":…,"last_id":…,"has_more":…} of that request's input
//     (not its chain's). Items keep their id or get one (msg_, fc_, fco_,
//     rs_, cmp_ or item_ by type), stable across listings; messages are in
//     the long form, {"id","type":"message","role","content":[parts]}, a
//     string input being one user message with an input_text part. limit
//     (1 to 100, default 20), order (asc or desc, default desc) and after
//     (an item id of the list) page it; bad values are 400s naming the
//     parameter.
//   - POST /responses with "background": true (a 400 with param background
//     unless store is true): the response is stored at once and produced by
//     a job of the Upstream. stream:false answers the object with status
//     queued, output [] and usage null; stream:true answers the events as
//     the job produces them, response.created carrying status queued. The
//     job waits for Step.Hold when After is 0 (the status stays queued),
//     then plays the turn with the step's pacing, Hold at After > 0
//     pausing it there (status in_progress); without Hold it completes at
//     once. Then the stored response has its final status and usage.
//     Server.Close stops jobs.
//   - POST /responses/{id}/cancel: a queued or in-progress background
//     response becomes cancelled and is answered with status cancelled,
//     output [] and the usage produced so far (input once in progress, one
//     output token per delta written); its followers' streams end without
//     a terminal event. A finished background response is answered as it
//     is; any other stored response is a 400 "Only background responses can
//     be cancelled." (param and code null).
//   - POST /responses/input_tokens with a create body (validated and
//     resolved as one): {"object":"response.input_tokens","input_tokens":N},
//     N being the input tokens a create of that body would report (Usage;
//     Step.Usage does not apply).
//   - POST /responses/compact (compaction v1) with a create body:
//     {"id":"resp_…","object":"response.compaction","created_at":…,
//     "output":[…,{"type":"compaction","id":"cmp_…","encrypted_content":…}],
//     "usage":{…}}, the output listing every user message of the previous
//     responses' inputs (oldest first) and of the input, in the long form
//     without ids, then the compaction item, whose blob is bound to the
//     account like a compaction_trigger's. Usage is as for a
//     compaction_trigger turn. Nothing is stored. A Step{Status: 404}
//     (with a Body such as {"detail":"Not Found"} if wanted) makes it
//     missing for one request, as on upstreams without it.
//   - GET /models: {"object":"list","data":[…]} of the models "gpt-test"
//     and "gpt-5", each {"id":…,"object":"model","created":1700000000,
//     "owned_by":"relaytest"}; GET /models/{id}: one of them, else 404 with
//     code model_not_found.
//
// Every request on these routes takes the account's next Step, like a
// create; only the part that acts before anything is answered (Hold, Cut,
// Status, Body, Header) applies, except on the creates and compactions
// noted above. They are logged in Requests and Served (ResponseID is the
// id in the path; Status "completed" for a 200, "queued" for a background
// create answered at once) and count in InFlight while being answered; a
// background job does not.
//
// # Chat Completions
//
// POST /chat/completions under each account's base URL (405 for another
// method, 401 without a bearer token as for a create) answers as a Chat
// Completions upstream does. It is stateless: nothing is stored.
//
//   - Validation, with the real API's 400 shapes: model required ("you
//     must provide a model parameter", param and code null); messages
//     required and a non-empty array; each message an object whose role is
//     system, developer, user, assistant or tool (code invalid_value, param
//     messages[i].role); content a string or an array of parts, required
//     except on an assistant message with tool_calls; part types text,
//     image_url, input_audio and file for user, text and refusal for
//     assistant, text only for the others (so Responses part types such as
//     input_text are refused, param messages[i].content[j].type); a tool
//     message needs tool_call_id; tools of type function or custom, a
//     function tool in the nested form {"type":"function","function":{"name",
//     ...}} (the flat Responses form is a 400 with param tools[i].function);
//     response_format of type text, json_object or json_schema, the last
//     with a json_schema object; max_completion_tokens and max_tokens
//     integers >= 1; reasoning_effort one of none, minimal, low, medium,
//     high, xhigh; stream_options only with stream:true ("The
//     'stream_options' parameter is only allowed when 'stream' is
//     enabled.").
//   - Tool call pairing, as the real API enforces it: the ids of an
//     assistant message's tool_calls must each be answered by the tool
//     messages that directly follow it (in any order), else a 400 "An
//     assistant message with 'tool_calls' must be followed by tool messages
//     responding to each 'tool_call_id'. The following tool_call_ids did
//     not have response messages: call_a, call_b" with param
//     "messages.[i].role", i being the assistant message; a tool message
//     outside such a run, or answering another id, is a 400 "Invalid
//     parameter: messages with role 'tool' must be a response to a
//     preceeding message with 'tool_calls'." (sic) with param
//     "messages.[i].role" of the tool message. Both have code null.
//   - The answer is decided as for a create: "Echo: <last user text>"; a
//     call of the first function tool when there is one and the last
//     message is a user message (tool_choice "none" answers text instead,
//     a tool_choice naming a function calls that one), with a "call_…" id
//     and arguments {"input":<last user text>}; "Function output received:
//     <content>" when the last message is a tool message. With
//     response_format json_schema or json_object the content is the JSON
//     object {"echo":<that text>} as a string. With a reasoning_effort
//     other than "none" the message has reasoning_content "Thinking about
//     <last user text>", and 16 reasoning tokens count as for a create.
//   - Usage is derived as for the same conversation sent as a create (see
//     Usage): prompt_tokens is 10 plus the words of every message's text,
//     tool call arguments included; cached_tokens 0; completion_tokens the
//     number of content (or argument) pieces plus reasoning_tokens.
//   - A max_completion_tokens (or max_tokens) below completion_tokens cuts
//     the answer: reasoning takes the budget first, then each piece is one
//     token; the content (or arguments) keeps the pieces that fit,
//     finish_reason is "length" and completion_tokens the budget.
//     reasoning_content is always whole.
//   - stream:false answers {"id":"chatcmpl-…","object":"chat.completion",
//     "created","model","service_tier","system_fingerprint":null,
//     "choices":[{"index":0,"message":{"role":"assistant","content",
//     "refusal":null,"annotations":[],"reasoning_content"?,"tool_calls"?},
//     "logprobs":null,"finish_reason"}],"usage":{"prompt_tokens",
//     "completion_tokens","total_tokens","prompt_tokens_details":
//     {"cached_tokens","audio_tokens"},"completion_tokens_details":
//     {"reasoning_tokens","audio_tokens","accepted_prediction_tokens",
//     "rejected_prediction_tokens"}}}; content is null for a tool call,
//     finish_reason "stop", "tool_calls", "length" or "content_filter".
//   - stream:true answers data: lines without event: names, each a
//     "chat.completion.chunk" with the same id, created and model: a first
//     chunk whose delta is {"role":"assistant","content":"" (null for a
//     tool call),"refusal":null}; reasoning_content pieces; for a tool call
//     one piece {"tool_calls":[{"index":0,"id","type":"function",
//     "function":{"name","arguments":""}}]} then argument fragments
//     {"tool_calls":[{"index":0,"function":{"arguments"}}]}, else content
//     pieces; a chunk with an empty delta and the finish_reason; only when
//     stream_options.include_usage is true a chunk with "choices":[] and
//     the usage (and "usage":null in every other chunk; Step.Events
//     "nousage" leaves the usage chunk out); then data: [DONE].
//     Piece chunks carry an "obfuscation" string (Step.EventPadding) unless
//     stream_options.include_obfuscation is false.
//
// Every request takes the account's next Step, which acts as on a create:
// Hold, Cut and Status (with Body and Header) before anything; Deltas is
// the number of pieces of content, arguments and reasoning_content alike;
// EventPadding, FirstTokenDelay (after the first chunk; before the
// headers with stream:false), EventInterval, Events and Usage as on a
// create; FunctionCall forces a tool call as there; After counts data:
// lines, [DONE] included (with stream:false, Hold and Cut at After > 0 act
// after half of the body, as on a create). End "incomplete"
// ends with finish_reason "length", or "content_filter" for that code;
// "failed" ends the stream after the output with a line
// data: {"error":{"message","type","param":null,"code"}} (no finish chunk,
// usage or [DONE]), "refused" and "error" send that line alone; with
// stream:false all three answer the HTTP error a real upstream sends for
// the code (429 for rate limits, 503 for server_is_overloaded, 400 for
// invalid requests, else 500) with that error body. End "none" ends the
// stream after the output without finish chunk or [DONE]. Step.Upgrade
// steps do not apply.
//
// These requests are logged in Requests (Path ending in
// /chat/completions) and Served: ResponseID is the chatcmpl- id, Status
// "completed" for finish_reason stop or tool_calls, "incomplete" for
// length or content_filter, "error" for an HTTP error or an error line;
// Usage only when it was sent (a stream without include_usage sends
// none); Events the data: lines written. n and the sampling parameters
// are accepted and ignored: there is one choice.
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
//   - "background": true is validated as over HTTP, then ignored: the turn
//     runs as usual.
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
