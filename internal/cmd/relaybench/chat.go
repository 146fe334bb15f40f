package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
)

// The chat-stream workload: the upstream speaks Chat Completions. direct
// and reverseproxy clients send chatStreamBody to an account's
// /chat/completions and read its chunks; the relay's clients send the
// usual streaming Responses request to a relay whose accounts are chat
// ones (scheduler.Account.WireAPI "chat"), which translates the turn up
// and the chunks back into Responses events.

// chatStreamBody asks for the usage chunk, as the relay does for a chat
// account, so that both sides stream the same chunks.
var chatStreamBody = []byte(`{"model":"gpt-test","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hello there"}]}`)

// chatFramingChunks is how many data: lines a streamed text completion of
// the fake has besides its content pieces: the role chunk, the
// finish_reason chunk, the usage chunk and [DONE]. The relay turns such
// a stream of deltas pieces into a Responses stream of deltas +
// framingEvents events.
const chatFramingChunks = 4

var (
	chatDoneData   = []byte("[DONE]")
	chatUsageField = []byte(`"usage":{`)
)

// postChat sends one Chat Completions request and reads its chunks to the
// end, checking that there are cfg.chatChunks of them, that one carried
// the usage and that the last was [DONE]. Each data: line counts as an
// event.
func (w *worker) postChat(ctx context.Context, client *http.Client, url string, auth http.Header, body []byte, cfg runConfig) (int, error) {
	resp, err := send(ctx, client, url, auth, body)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	w.br.Reset(resp.Body)
	w.chatDone, w.chatUsage = false, false
	n, _, err := readSSE(w.br, w.onData)
	w.br.Reset(nil)
	if err != nil {
		return n, fmt.Errorf("chat stream cut after %d chunks: %w", n, err)
	}
	if !w.chatDone || !w.chatUsage || n != cfg.chatChunks {
		return n, fmt.Errorf("chat stream of %d chunks (want %d), [DONE] last %v, usage chunk %v", n, cfg.chatChunks, w.chatDone, w.chatUsage)
	}
	return n, nil
}

// chatData looks at one data: payload of a chat stream: whether it is
// [DONE] (only the last one's answer sticks) or the usage chunk, and with
// -pace the stamp of a content piece. Usage is null in the other chunks.
func (w *worker) chatData(data []byte) {
	data = bytes.TrimSpace(data)
	w.chatDone = bytes.Equal(data, chatDoneData)
	if !w.chatUsage && bytes.Contains(data, chatUsageField) {
		w.chatUsage = true
	}
	if w.pace {
		w.recordStamp(data)
	}
}
