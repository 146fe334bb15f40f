package billing

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestUsageJSONNamesAreSnakeCase(t *testing.T) {
	b, err := json.Marshal(Usage{RequestID: "req_1", InputTokens: 3, CostMicros: 21000, CreatedAt: time.Unix(0, 0).UTC()})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"request_id":"req_1"`, `"input_tokens":3`, `"cost_micros":21000`, `"created_at":"1970-01-01T00:00:00Z"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("%s lacks %s", b, want)
		}
	}
	if strings.Contains(string(b), "RequestID") {
		t.Errorf("%s still uses Go field names", b)
	}
}

// A spool written before Usage had tags holds Go field names; it must still
// decode after an upgrade, field for field.
func TestDecodeUsageReadsRecordsSpooledWithGoFieldNames(t *testing.T) {
	legacy := `{"RequestID":"req_7","ResponseID":"resp_7","UserID":"u1","Model":"gpt-5","Stream":true,` +
		`"Turn":2,"InputTokens":11,"CachedInputTokens":4,"OutputTokens":5,"ReasoningTokens":1,"TotalTokens":16,` +
		`"Status":"completed","Attempts":2,"FirstTokenMS":-1,"UserAgent":"ua \"RequestID\"","CreatedAt":"2026-01-02T03:04:05Z"}`
	var u Usage
	if err := decodeUsage([]byte(legacy), &u); err != nil {
		t.Fatal(err)
	}
	want := Usage{RequestID: "req_7", ResponseID: "resp_7", UserID: "u1", Model: "gpt-5", Stream: true, Turn: 2,
		InputTokens: 11, CachedInputTokens: 4, OutputTokens: 5, ReasoningTokens: 1, TotalTokens: 16,
		Status: StatusCompleted, Attempts: 2, FirstTokenMS: -1, UserAgent: `ua "RequestID"`,
		CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	if u != want {
		t.Fatalf("decoded %+v\nwant    %+v", u, want)
	}

	// A current record whose text merely mentions the old name decodes as is.
	cur, _ := json.Marshal(Usage{RequestID: "req_8", UserAgent: `"RequestID"`})
	u = Usage{}
	if err := decodeUsage(cur, &u); err != nil || u.RequestID != "req_8" || u.UserAgent != `"RequestID"` {
		t.Fatalf("current record decoded as %+v, %v", u, err)
	}
}
