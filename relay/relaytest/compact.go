package relaytest

import "time"

// The two routes that read a create-like body without creating a
// response: the token count and the compaction (v1).

// inputTokens answers POST /responses/input_tokens with the input token
// count a create of the same body would report (without Step.Usage).
func (x *exchange) inputTokens(body []byte) {
	q, prev, ok := x.parse(body)
	if !ok {
		return
	}
	n, _ := inputUsage(q, prev)
	b := append(make([]byte, 0, 64), `{"object":"response.input_tokens","input_tokens":`...)
	b = appendInt(b, n)
	x.writeJSON(append(b, "}\n"...), statusCompleted)
}

// compact answers POST /responses/compact: the user messages of the
// previous responses' inputs (oldest first) and of the input, then one
// compaction item whose blob is bound to the account. Usage counts as for
// a compaction_trigger turn. Nothing is stored.
func (x *exchange) compact(body []byte) {
	q, prev, ok := x.parse(body)
	if !ok {
		return
	}
	a := x.acct
	var chain []*stored
	for s := prev; s != nil; s = s.prev {
		chain = append(chain, s)
	}
	var msgs []string
	for i := len(chain) - 1; i >= 0; i-- {
		if t := chain[i].t; t != nil {
			msgs = userMessages(msgs, t.req.input)
		}
	}
	msgs = userMessages(msgs, q.input)

	s := &x.step
	var use Usage
	if s.Usage != nil {
		use = *s.Usage
	} else {
		use.Input, use.Cached = inputUsage(q, prev)
		if q.hasReasoning {
			use.Reasoning = reasoningTokens
		}
		use.Output = int64(s.Deltas) + use.Reasoning
		if s.Deltas <= 0 {
			use.Output = defaultDeltas + use.Reasoning
		}
	}
	id, cmpID, now := newID("resp_", 32), newID("cmp_", 32), time.Now().Unix()
	b := append(make([]byte, 0, 512), `{"id":"`...)
	b = append(b, id...)
	b = append(b, `","object":"response.compaction","created_at":`...)
	b = appendInt(b, now)
	b = append(b, `,"output":[`...)
	for _, m := range msgs {
		b = append(b, m...)
		b = append(b, ',')
	}
	b = append(b, `{"type":"compaction","id":"`...)
	b = append(b, cmpID...)
	b = append(b, `","encrypted_content":"`...)
	b = append(b, sealBlob(a.name, blobCompaction, cmpID, a.blobs.Add(1), now)...)
	b = append(b, `"}],"usage":`...)
	b = appendUsage(b, use)
	x.served.ResponseID, x.served.Usage = id, use
	x.writeJSON(append(b, "}\n"...), statusCompleted)
}
