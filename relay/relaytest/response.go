package relaytest

// The parts of the response object that do not depend on the turn's
// progress: its usage and the members echoed from the request.

func appendUsage(b []byte, u Usage) []byte {
	b = append(b, `{"input_tokens":`...)
	b = appendInt(b, u.Input)
	b = append(b, `,"input_tokens_details":{"cached_tokens":`...)
	b = appendInt(b, u.Cached)
	b = append(b, `},"output_tokens":`...)
	b = appendInt(b, u.Output)
	b = append(b, `,"output_tokens_details":{"reasoning_tokens":`...)
	b = appendInt(b, u.Reasoning)
	b = append(b, `},"total_tokens":`...)
	b = appendInt(b, u.Input+u.Output)
	return append(b, '}')
}

// appendTail appends the response members that never change during a turn,
// echoing the request as the real API does.
func (t *turn) appendTail(b []byte) []byte {
	q := t.req
	b = append(b, `,"background":`...)
	if q.background {
		b = append(b, "true"...)
	} else {
		b = append(b, "false"...)
	}
	b = append(b, `,"instructions":`...)
	b = appendRawOr(b, q.instructions, "null")
	b = append(b, `,"max_output_tokens":`...)
	b = appendRawOr(b, q.maxOutput, "null")
	b = append(b, `,"metadata":`...)
	b = appendRawOr(b, q.metadata, "{}")
	b = append(b, `,"model":`...)
	b = appendString(b, q.model)
	b = append(b, `,"parallel_tool_calls":true,"previous_response_id":`...)
	b = appendStringOrNull(b, q.prevID)
	b = append(b, `,"prompt_cache_key":`...)
	b = appendRawOr(b, q.promptCacheKey, "null")
	b = append(b, `,"reasoning":{"effort":`...)
	b = appendRawOr(b, q.effort, "null")
	b = append(b, `,"summary":`...)
	b = appendRawOr(b, q.summary, "null")
	b = append(b, `},"service_tier":`...)
	b = appendString(b, q.serviceTier)
	b = append(b, `,"store":`...)
	if q.store {
		b = append(b, "true"...)
	} else {
		b = append(b, "false"...)
	}
	b = append(b, `,"temperature":`...)
	b = appendRawOr(b, q.temperature, "1.0")
	b = append(b, `,"text":{"format":{"type":"text"},"verbosity":"medium"},"tool_choice":`...)
	b = appendRawOr(b, q.toolChoice, `"auto"`)
	b = append(b, `,"tools":`...)
	b = appendRawOr(b, q.tools, "[]")
	b = append(b, `,"top_p":`...)
	b = appendRawOr(b, q.topP, "1.0")
	b = append(b, `,"truncation":`...)
	b = appendRawOr(b, q.truncation, `"disabled"`)
	return append(b, `,"user":null`...)
}
