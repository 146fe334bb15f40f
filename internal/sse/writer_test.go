package sse

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestAppendEventOneLine: JSON split over lines (as an upstream's
// multi-line data: arrives) goes out on one data: line and decodes to the
// same value.
func TestAppendEventOneLine(t *testing.T) {
	in := "{\n\"type\":\r\n\"x\",\r\"n\":1\n}"
	out := string(AppendEvent(nil, "x", []byte(in)))
	if strings.Count(out, "\n") != 3 || strings.Contains(out, "\r") || !strings.HasPrefix(out, "event: x\ndata: {") {
		t.Fatalf("framing %q", out)
	}
	var a, b map[string]any
	data := strings.TrimSuffix(strings.TrimPrefix(out, "event: x\ndata: "), "\n\n")
	if json.Unmarshal([]byte(data), &a) != nil || json.Unmarshal([]byte(in), &b) != nil || a["type"] != b["type"] || a["n"] != b["n"] {
		t.Fatalf("%q decodes as %v, want %v", data, a, b)
	}
	if got := string(AppendEvent(nil, "", []byte(`{"a":1}`))); got != "data: {\"a\":1}\n\n" {
		t.Fatalf("single line changed: %q", got)
	}
}
