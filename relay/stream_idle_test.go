package relay_test

import (
	"bufio"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/tidwall/gjson"
)

// TestStreamIdleThenResumes: a stream whose upstream falls silent after
// its first delta gets keepalive pings while it waits (its read buffer
// given back, see answer_stream.go), then, when the upstream goes on,
// every event in order, each whole (the resumed burst is larger than the
// buffer the stream waited in), ending with response.completed; one
// usage record, and slots and goroutines back to zero (newEnv's cleanup).
func TestStreamIdleThenResumes(t *testing.T) {
	e := newEnv(t, "a")
	e.h.KeepAlive = 10 * time.Millisecond
	resume := make(chan struct{})
	e.up.Script("a", relaytest.Step{After: 5, Hold: resume})
	resp := e.streamOpen(context.Background(), streamReq)
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)

	var types []string
	var datas []string
	pings := 0
	resumed := false
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("after %v: %v", types, err)
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case line == ": ping":
			if pings++; pings == 3 && !resumed {
				if len(types) != 5 {
					t.Fatalf("before the silence: %v", types)
				}
				close(resume)
				resumed = true
			}
		case strings.HasPrefix(line, "event: "):
			types = append(types, strings.TrimPrefix(line, "event: "))
		case strings.HasPrefix(line, "data: "):
			datas = append(datas, strings.TrimPrefix(line, "data: "))
		}
		if len(types) > 0 && types[len(types)-1] == "response.completed" && len(datas) == len(types) {
			break
		}
	}
	if !resumed {
		t.Fatalf("the stream ended without waiting: %v", types)
	}
	for i, d := range datas {
		if !gjson.Valid(d) || gjson.Get(d, "type").String() != types[i] || gjson.Get(d, "sequence_number").Int() != int64(i) {
			t.Fatalf("event %d (%s): %.120s", i, types[i], d)
		}
	}
	if len(types) < 8 {
		t.Fatalf("events %v", types)
	}
	waitUntil(t, "the usage record", func() bool { return len(e.sink.all()) == 1 })
	rec, served := e.sink.all()[0], e.up.Served()
	if rec.Status != billing.StatusCompleted || len(served) != 1 {
		t.Fatalf("record %+v, served %+v", rec, served)
	}
	checkUsage(t, rec, served[0].Usage)
}
