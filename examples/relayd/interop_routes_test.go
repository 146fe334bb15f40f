package main

// The rest of the Responses API through relayd with the openai-go SDK:
// retrieve, stream a background response, delete, input items, cancel,
// input token counts, compaction v1 and the model list.

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/responses"

	"github.com/relaykit/responsesrelay/relay/relaytest"
)

func TestInteropStoredResponse(t *testing.T) {
	e := newEnv(t, []string{"a1"}, nil)
	client := e.sdk(keyAlice)
	resp, err := client.Responses.New(t.Context(), responses.ResponseNewParams{Model: "gpt-5", Input: userText("keep this")})
	if err != nil {
		t.Fatal(err)
	}
	got, err := client.Responses.Get(t.Context(), resp.ID, responses.ResponseGetParams{})
	if err != nil || got.ID != resp.ID || got.OutputText() != "Echo: keep this" || got.Status != "completed" {
		t.Fatalf("Get: %v %+v", err, got)
	}
	items, err := client.Responses.InputItems.List(t.Context(), resp.ID, responses.InputItemListParams{})
	if err != nil || len(items.Data) != 1 || !strings.Contains(items.Data[0].RawJSON(), "keep this") {
		t.Fatalf("InputItems.List: %v %+v", err, items)
	}
	// Bob cannot reach Alice's response on any route.
	bob := e.sdk(keyBob)
	before := len(e.up.Requests())
	_, err = bob.Responses.Get(t.Context(), resp.ID, responses.ResponseGetParams{})
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusNotFound {
		t.Fatalf("Bob's Get: %v", err)
	}
	if err := bob.Responses.Delete(t.Context(), resp.ID); !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusNotFound {
		t.Fatalf("Bob's Delete: %v", err)
	}
	if n := len(e.up.Requests()) - before; n != 0 {
		t.Fatalf("%d upstream requests for Bob", n)
	}
	if err := client.Responses.Delete(t.Context(), resp.ID); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := client.Responses.Get(t.Context(), resp.ID, responses.ResponseGetParams{}); !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusNotFound {
		t.Fatalf("Get after Delete: %v", err)
	}
	if n := len(e.rows()); n != 1 {
		t.Fatalf("%d usage rows, want the one turn", n)
	}
}

func TestInteropBackground(t *testing.T) {
	e := newEnv(t, []string{"a1"}, nil)
	client := e.sdk(keyAlice)
	hold := make(chan struct{})
	e.up.Script("a1", relaytest.Step{Hold: hold})
	resp, err := client.Responses.New(t.Context(), responses.ResponseNewParams{Model: "gpt-5", Input: userText("slow work"), Background: openai.Bool(true)})
	if err != nil || resp.Status != "queued" {
		t.Fatalf("New background: %v %+v", err, resp)
	}
	stream := client.Responses.GetStreaming(t.Context(), resp.ID, responses.ResponseGetParams{})
	close(hold)
	var last responses.ResponseStreamEventUnion
	n := 0
	for stream.Next() {
		last = stream.Current()
		n++
	}
	if err := stream.Err(); err != nil || last.Type != "response.completed" || last.Response.OutputText() != "Echo: slow work" {
		t.Fatalf("GetStreaming: %v after %d events, last %q", err, n, last.Type)
	}
	// A second one, cancelled while it runs.
	hold2 := make(chan struct{})
	defer close(hold2)
	e.up.Script("a1", relaytest.Step{Hold: hold2})
	resp, err = client.Responses.New(t.Context(), responses.ResponseNewParams{Model: "gpt-5", Input: userText("never mind"), Background: openai.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	cancelled, err := client.Responses.Cancel(t.Context(), resp.ID)
	if err != nil || cancelled.Status != "cancelled" {
		t.Fatalf("Cancel: %v %+v", err, cancelled)
	}
	// One row each, written when each ended (e.rows ends relayd: last).
	rows := e.rows()
	if len(rows) != 2 {
		t.Fatalf("%d usage rows", len(rows))
	}
	for _, row := range rows {
		if row.ResponseID == resp.ID && row.Status != "incomplete" || row.ResponseID != resp.ID && (row.Status != "completed" || row.Output == 0) {
			t.Fatalf("row %+v", row)
		}
	}
}

func TestInteropCountCompactModels(t *testing.T) {
	e := newEnv(t, []string{"a1"}, func(c *Config) { c.Accounts[0].Models = []string{"gpt-5", "o3"} })
	client := e.sdk(keyAlice)
	count, err := client.Responses.InputTokens.Count(t.Context(), responses.InputTokenCountParams{
		Model: openai.String("gpt-5"), Input: responses.InputTokenCountParamsInputUnion{OfString: openai.String("count me")}})
	if err != nil || count.InputTokens <= 0 {
		t.Fatalf("InputTokens.Count: %v %+v", err, count)
	}
	compacted, err := client.Responses.Compact(t.Context(), responses.ResponseCompactParams{
		Model: "gpt-5", Input: responses.ResponseCompactParamsInputUnion{OfString: openai.String("a long story")}})
	if err != nil || len(compacted.Output) == 0 || compacted.Output[len(compacted.Output)-1].Type != "compaction" {
		t.Fatalf("Compact: %v %+v", err, compacted)
	}
	// An account that does not serve the compact endpoint: the trigger.
	e.up.Script("a1", relaytest.Step{Status: http.StatusNotFound})
	compacted, err = client.Responses.Compact(t.Context(), responses.ResponseCompactParams{
		Model: "gpt-5", Input: responses.ResponseCompactParamsInputUnion{OfString: openai.String("another story")}})
	if err != nil || compacted.Output[len(compacted.Output)-1].Type != "compaction" {
		t.Fatalf("Compact by trigger: %v %+v", err, compacted)
	}
	models, err := client.Models.List(t.Context())
	if err != nil || len(models.Data) != 2 || models.Data[0].ID != "gpt-5" || models.Data[1].ID != "o3" {
		t.Fatalf("Models.List: %v %+v", err, models)
	}
	m, err := client.Models.Get(t.Context(), "o3")
	if err != nil || m.ID != "o3" {
		t.Fatalf("Models.Get: %v %+v", err, m)
	}
	if _, err := client.Models.Get(t.Context(), "gpt-4o"); err == nil {
		t.Fatal("Models.Get of a model nobody serves succeeded")
	}
	if n := len(e.rows()); n != 2 {
		t.Fatalf("%d usage rows, want the two compactions", n)
	}
}
