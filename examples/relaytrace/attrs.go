package relaytrace

import "go.opentelemetry.io/otel/attribute"

// Attribute keys. Where an OpenTelemetry semantic convention exists (HTTP,
// errors, GenAI) its name is used; the relay's own take the "relay."
// prefix.
const (
	// On the turn span, from the start.
	AttrRequestID = attribute.Key("relay.request_id") // also X-Relay-Request-Id and the usage record's RequestID
	AttrTransport = attribute.Key("relay.transport")  // "http" or "ws"
	AttrTurn      = attribute.Key("relay.turn")       // the turn's number on its connection, from 1

	// On the turn span, at the end.
	AttrModel           = attribute.Key("gen_ai.request.model") // as the client asked for it
	AttrUpstreamModel   = attribute.Key("relay.upstream_model") // as sent upstream (after ModelMap)
	AttrResponseID      = attribute.Key("gen_ai.response.id")   // resp_... from the upstream
	AttrStatus          = attribute.Key("relay.status")         // usage status, "error" or "client_gone"
	AttrAttempts        = attribute.Key("relay.attempts")       // upstream attempts, failovers included
	AttrStream          = attribute.Key("relay.stream")         // the request asked for a stream
	AttrErrorType       = attribute.Key("error.type")           // the error type answered, when an error
	AttrGroupID         = attribute.Key("relay.group_id")       // the subject's group
	AttrUserID          = attribute.Key("relay.user_id")        // only with Options.RecordSubject
	AttrAPIKeyID        = attribute.Key("relay.api_key_id")     // only with Options.RecordSubject
	AttrInputTokens     = attribute.Key("gen_ai.usage.input_tokens")
	AttrOutputTokens    = attribute.Key("gen_ai.usage.output_tokens")
	AttrCachedTokens    = attribute.Key("relay.usage.cached_input_tokens")
	AttrReasoningTokens = attribute.Key("relay.usage.reasoning_tokens")

	// On the turn span at the end (the client's answer) and on attempt
	// spans (the upstream's answer, when there was one).
	AttrHTTPStatus = attribute.Key("http.response.status_code")

	// On attempt spans, on the turn span (the account that served it, or
	// the last one tried) and on events.
	AttrAccountID = attribute.Key("relay.account.id")
	AttrAttempt   = attribute.Key("relay.attempt")         // 1 for the first attempt of the turn
	AttrLayer     = attribute.Key("relay.layer")           // how the account was chosen: pinned, previous_response, session, balanced
	AttrOutcome   = attribute.Key("relay.attempt.outcome") // relay.Attempt* value
	AttrReason    = attribute.Key("relay.attempt.reason")  // relay.Reason* value, when the attempt failed

	// On events.
	AttrTTFTMS      = attribute.Key("relay.ttft_ms")      // first_token: since the turn arrived (whole milliseconds)
	AttrSlotKind    = attribute.Key("relay.slot.kind")    // slot_wait: "user" or "account"
	AttrSlotOutcome = attribute.Key("relay.slot.outcome") // slot_wait: relay.Wait* value
	AttrSlotWaitMS  = attribute.Key("relay.slot.wait_ms") // slot_wait: how long it took
)
