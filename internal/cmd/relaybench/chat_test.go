package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestBenchChatStream runs chat-stream against every target, with the
// upstream in this process and in a child process: no errors, chat chunks
// counted for direct and reverseproxy, Responses events for the relay, one
// upstream attempt per request, and the JSON lines carry the relay's
// allocations per event.
func TestBenchChatStream(t *testing.T) {
	for _, extra := range [][]string{nil, {"-upstream-process"}} {
		args := append([]string{"-duration", "150ms", "-rounds", "1", "-concurrency", "2", "-events", "20", "-workloads", "chat-stream", "-json"}, extra...)
		cfg, err := parseFlags(args, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		rs, err := benchWorkload(cfg, wlChatStream, testWriter{t})
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) != len(allTargets) {
			t.Fatalf("%v: %d results", extra, len(rs))
		}
		for _, r := range rs {
			want := int64(16) // deltasFor(20) = 12 pieces, role, finish, usage, [DONE]
			if r.target == targetRelay {
				want = 20
			}
			if r.requests == 0 || r.errors != 0 || r.events != r.requests*want {
				t.Errorf("%v %s: %d requests, %d errors (first: %s), %d events, want %d each",
					extra, r.target, r.requests, r.errors, r.firstErr, r.events, want)
			}
		}
		relay := find(rs, targetRelay)
		if !relay.hasAttempts || relay.relayAttempts != relay.requests {
			t.Errorf("%v: relay made %d upstream attempts for %d requests", extra, relay.relayAttempts, relay.requests)
		}
		var out bytes.Buffer
		if err := writeJSON(&out, rs); err != nil {
			t.Fatal(err)
		}
		lines := bytes.Split(bytes.TrimSpace(out.Bytes()), []byte("\n"))
		if len(lines) != len(allTargets) {
			t.Fatalf("%d JSON lines:\n%s", len(lines), out.Bytes())
		}
		var row map[string]any
		if err := json.Unmarshal(lines[len(lines)-1], &row); err != nil {
			t.Fatal(err)
		}
		if row["workload"] != "chat-stream" || row["target"] != targetRelay || row["events_per_req"] != 20.0 {
			t.Errorf("relay row: %s", lines[len(lines)-1])
		}
		if _, ok := row["added_allocs_per_event"].(float64); !ok {
			t.Errorf("relay row has no added_allocs_per_event: %s", lines[len(lines)-1])
		}
		var table bytes.Buffer
		writeTable(&table, wlChatStream, rs, cfg)
		if !strings.Contains(table.String(), "streaming chat of 16 chunks") {
			t.Errorf("table:\n%s", table.String())
		}
	}
}

// TestPostChatChecks: a chat stream counts as an error unless it has the
// expected chunks, a usage chunk and [DONE] last.
func TestPostChatChecks(t *testing.T) {
	const (
		role   = `data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}],"usage":null}` + "\n\n"
		piece  = `data: {"choices":[{"index":0,"delta":{"content":"hi"}}],"usage":null}` + "\n\n"
		finish = `data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}` + "\n\n"
		usage  = `data: {"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":1}}` + "\n\n"
		done   = "data: [DONE]\n\n"
	)
	cases := []struct {
		name, body string
		ok         bool
	}{
		{"whole", role + piece + finish + usage + done, true},
		{"no usage", role + piece + piece + finish + done, false},
		{"no [DONE]", role + piece + piece + finish + usage, false},
		{"[DONE] not last", role + piece + finish + done + usage, false},
		{"short", role + finish + usage + done, false},
		{"cut", role + piece + finish + usage + done[:8], false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				io.WriteString(w, c.body)
			}))
			defer srv.Close()
			client := srv.Client()
			defer client.CloseIdleConnections()
			w := &worker{br: bufio.NewReaderSize(nil, 16<<10)}
			w.onData = w.chatData
			n, err := w.postChat(context.Background(), client, srv.URL, bearer(upstreamKey), chatStreamBody, runConfig{chatChunks: 5})
			if (err == nil) != c.ok {
				t.Errorf("%d chunks, error %v; want ok %v", n, err, c.ok)
			}
		})
	}
}
