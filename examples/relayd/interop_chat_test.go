package main

// A Chat Completions account behind relayd, with the openai-go SDK on the
// Responses API side.

import (
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/responses"
)

func TestInteropChatAccount(t *testing.T) {
	e := newEnv(t, []string{"c1"}, func(c *Config) { c.Accounts[0].WireAPI = "chat" })
	client := e.sdk(keyAlice)
	resp, err := client.Responses.New(t.Context(), responses.ResponseNewParams{Model: "gpt-5", Input: userText("from the sdk")})
	if err != nil || resp.OutputText() != "Echo: from the sdk" || resp.Status != "completed" {
		t.Fatalf("New: %v %+v", err, resp)
	}
	stream := client.Responses.NewStreaming(t.Context(), responses.ResponseNewParams{Model: "gpt-5", Input: userText("streamed"),
		PreviousResponseID: openai.String(resp.ID)})
	var last responses.ResponseStreamEventUnion
	for stream.Next() {
		last = stream.Current()
	}
	if err := stream.Err(); err != nil || last.Type != "response.completed" || last.Response.OutputText() != "Echo: streamed" {
		t.Fatalf("NewStreaming: %v %q", err, last.Type)
	}
	reqs := e.up.Requests()
	q := reqs[len(reqs)-1]
	if !strings.HasSuffix(q.Path, "/chat/completions") || !strings.Contains(string(q.Body), "from the sdk") {
		t.Fatalf("the chained turn reached the upstream as %s %s", q.Path, q.Body)
	}
	rows := e.rows()
	if len(rows) != 2 {
		t.Fatalf("%d rows", len(rows))
	}
	for _, row := range rows {
		if row.Status != "completed" || row.Input == 0 || row.Output == 0 {
			t.Fatalf("row %+v", row)
		}
	}
}
