package jsonx

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestAppendStringRoundTrip(t *testing.T) {
	for _, s := range []string{"", "plain", `q"b\s`, "a\x01b\xffc", "line\nbreak\ttab\r", "\u2028\u2029", "héllo ✓"} {
		b := AppendString(nil, s)
		if !json.Valid(b) {
			t.Fatalf("%q: invalid JSON %s", s, b)
		}
		var back string
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if want := string([]rune(s)); back != want && s != "a\x01b\xffc" {
			t.Fatalf("%q came back as %q", s, back)
		}
	}
	if string(AppendStringOrNull(nil, "")) != "null" {
		t.Fatal("empty is not null")
	}
}

// FuzzAppendString: every string becomes valid JSON on one line that
// decodes back to it (valid UTF-8 exactly; invalid bytes as U+FFFD).
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", `q"b\s`, "\n\r\t\x00\x1f", "☃ \u2028 \u2029", "bad \xff utf8"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := AppendString(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%q -> invalid JSON %s: %v", s, b, err)
		}
		if utf8.ValidString(s) && got != s {
			t.Fatalf("%q -> %q", s, got)
		}
		if strings.ContainsAny(string(b), "\n\r") {
			t.Fatalf("raw newline in %s", b)
		}
	})
}
