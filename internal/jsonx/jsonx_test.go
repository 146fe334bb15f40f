package jsonx

import (
	"encoding/json"
	"testing"
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

func FuzzAppendString(f *testing.F) {
	f.Add("x\x00\xff\"")
	f.Fuzz(func(t *testing.T, s string) {
		if b := AppendString(nil, s); !json.Valid(b) {
			t.Fatalf("invalid JSON for %q: %s", s, b)
		}
	})
}
