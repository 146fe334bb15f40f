package stamp

import (
	"testing"
	"time"
)

func TestRoundTrip(t *testing.T) {
	now := time.Unix(0, 1_796_000_000_123_456_789)
	ev := append(append([]byte(`{"type":"response.output_text.delta","obfuscation":`), Append(nil, now)...), '}')
	if got, ok := Parse(ev); !ok || !got.Equal(now) {
		t.Fatalf("Parse(%s) = %v, %v", ev, got, ok)
	}
	for _, ev := range []string{`{"obfuscation":"abc"}`, `{"obfuscation":""}`, `{"type":"x"}`, `{"obfuscation":12}`} {
		if _, ok := Parse([]byte(ev)); ok {
			t.Errorf("%s parsed as a stamp", ev)
		}
	}
}
