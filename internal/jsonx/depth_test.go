package jsonx

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
)

func nested(n int) []byte {
	return append(bytes.Repeat([]byte("["), n), bytes.Repeat([]byte("]"), n)...)
}

func TestDepthExceeds(t *testing.T) {
	cases := []struct {
		doc  string
		max  int
		want bool
	}{
		{`"scalar"`, 1, false},
		{`5`, -1, false},
		{`{}`, 1, false},
		{`[{}]`, 1, true},
		{`[{}]`, 2, false},
		{`{"a":{"b":[1,{"c":2}]}}`, 4, false},
		{`{"a":{"b":[1,{"c":2}]}}`, 3, true},
		// Brackets inside strings are text, escaped quotes included.
		{`{"t":"[[[[{{{{"}`, 1, false},
		{`{"t":"\"[[[[\"","u":"{{{{"}`, 1, false},
		{`["\\",[[]]]`, 2, true},     // an escaped backslash ends before the quote
		{`["\\\"[[[",[]]`, 2, false}, // three backslashes: the quote is escaped
		{`["\\\\"[[[]]]]`, 3, true},  // four: it is not
		{`{"k\"[[":"v"}`, 1, false},  // a key is a string too
		{`"unterminated [[[[`, 1, false},
		// A closing bracket with none open cannot hide what follows.
		{`]]]][[[`, 2, true},
		{`]]]][[[`, 3, false},
		{`[}[}[}`, 1, false}, // a parser fails at the first }; counted as closes
	}
	for _, c := range cases {
		if got := DepthExceeds([]byte(c.doc), c.max); got != c.want {
			t.Errorf("DepthExceeds(%s, %d) = %v, want %v", c.doc, c.max, got, c.want)
		}
	}
}

func TestDepthDefaults(t *testing.T) {
	if DepthExceeds(nested(MaxDepth), 0) {
		t.Fatal("MaxDepth levels rejected by the default")
	}
	if !DepthExceeds(nested(MaxDepth+1), 0) {
		t.Fatal("MaxDepth+1 levels accepted by the default")
	}
	if DepthExceeds(nested(1_000_000), -1) {
		t.Fatal("a negative max still checks")
	}
	deep := bytes.Repeat([]byte("["), 1_000_000) // never closed, as an attack sends it
	if !DepthExceeds(deep, 0) {
		t.Fatal("a million open brackets accepted")
	}
	inString := append(append([]byte(`{"text":"`), deep...), `"}`...)
	if DepthExceeds(inString, 0) {
		t.Fatal("a million brackets inside a string counted as nesting")
	}
	if n := testing.AllocsPerRun(10, func() { DepthExceeds(inString, 0) }); n != 0 {
		t.Fatalf("%v allocations per check", n)
	}
}

// refDepth is the reference: a recursive descent over valid JSON (decoded
// by encoding/json, which has its own depth limit), for small inputs.
func refDepth(v any) int {
	d := 0
	switch v := v.(type) {
	case []any:
		for _, e := range v {
			d = max(d, refDepth(e))
		}
		return d + 1
	case map[string]any:
		for _, e := range v {
			d = max(d, refDepth(e))
		}
		return d + 1
	}
	return 0
}

// refScan is a byte-by-byte reference for any input: the same counting
// rules as DepthExceeds, written the plain way.
func refScan(b []byte) int {
	depth, deepest, inStr, esc := 0, 0, false, false
	for _, c := range b {
		switch {
		case inStr && esc:
			esc = false
		case inStr && c == '\\':
			esc = true
		case inStr && c == '"':
			inStr = false
		case inStr:
		case c == '"':
			inStr = true
		case c == '[' || c == '{':
			depth++
			deepest = max(deepest, depth)
		case (c == ']' || c == '}') && depth > 0:
			depth--
		}
	}
	return deepest
}

// FuzzDepth compares DepthExceeds with a byte-by-byte reference on any
// input, and with the decoded document's depth on valid JSON.
func FuzzDepth(f *testing.F) {
	for _, s := range []string{
		`{}`, `[]`, `"x"`, `{"a":[1,{"b":"[[["}]}`, `{"q":"\"[{\\"}`, `["\\\\",[[]]]`,
		`]]][[[`, `"open [[`, `{"k\"{":{"v":"}}}}"}}`, `[` + strings.Repeat(`[`, 600), strings.Repeat(`{"a":`, 40) + `1` + strings.Repeat(`}`, 40),
		`["\u005b[",["\u0022[["]]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		d := refScan(b)
		for _, m := range []int{1, 2, 3, d - 1, d, d + 1} {
			if m <= 0 {
				continue
			}
			if got := DepthExceeds(b, m); got != (d > m) {
				t.Fatalf("DepthExceeds(%q, %d) = %v; reference depth %d", b, m, got, d)
			}
		}
		if DepthExceeds(b, -1) {
			t.Fatal("negative max checked")
		}
		if DepthExceeds(b, 0) != (d > MaxDepth) {
			t.Fatalf("default: reference depth %d", d)
		}
		var got []string
		if Members(b, 0, func(k, v []byte) { got = append(got, string(k), string(v)) }) != (d > MaxDepth) {
			t.Fatalf("Members default: reference depth %d", d)
		}
		if Members(b, -1, func(k, v []byte) {}) {
			t.Fatal("Members: negative max checked")
		}
		var v any
		if len(b) < 4096 && json.Unmarshal(b, &v) == nil {
			if rd := refDepth(v); rd != d {
				t.Fatalf("%q: decoded depth %d, scan %d", b, rd, d)
			}
			// On valid JSON the members are gjson's (safe here: shallow).
			var want []string
			if root := gjson.ParseBytes(b); root.IsObject() {
				root.ForEach(func(k, v gjson.Result) bool {
					want = append(want, k.Raw[1:len(k.Raw)-1], v.Raw)
					return true
				})
			}
			if strings.Join(got, "\x00") != strings.Join(want, "\x00") {
				t.Fatalf("%q: members %q, gjson %q", b, got, want)
			}
		}
	})
}

func TestMembers(t *testing.T) {
	doc := ` { "model" : "m" , "input":[{"a":"[}"}], "k\"{":{"x":1},"n":-1.5e3,"t":true , "s":"]\"}" } `
	var got []string
	if Members([]byte(doc), 3, func(k, v []byte) { got = append(got, string(k)+"="+string(v)) }) {
		t.Fatal("depth 3 reported too deep")
	}
	want := []string{`model="m"`, `input=[{"a":"[}"}]`, `k\"{={"x":1}`, `n=-1.5e3`, `t=true`, `s="]\"}"`}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("members %q, want %q", got, want)
	}
	if !Members([]byte(doc), 2, func(k, v []byte) {}) {
		t.Fatal("depth 3 passed a max of 2")
	}
	for _, notObj := range []string{`[1,2]`, `"a:b"`, `5`, ``} {
		Members([]byte(notObj), 0, func(k, v []byte) { t.Fatalf("%s: member %s=%s", notObj, k, v) })
	}
	deep := append([]byte(`{"model":"m","x":`), bytes.Repeat([]byte("["), 1_000_000)...)
	if !Members(deep, 0, func(k, v []byte) {}) {
		t.Fatal("a million open brackets accepted")
	}
	docb := []byte(doc)
	if n := testing.AllocsPerRun(10, func() { Members(docb, 0, func(k, v []byte) {}) }); n != 0 {
		t.Fatalf("%v allocations per scan", n)
	}
}

func TestComplete(t *testing.T) {
	for in, want := range map[string]bool{
		`{}`: true, ` {"a":[1,{"b":"]}"}]} `: true, `[1,2]`: true, `{"a":"\"}"}`: true,
		``: false, `{`: false, `{"a":1`: false, `{"a":"x}`: false, `}{`: false, `{} {}`: false,
		`"str"`: false, `{"a":1}}`: false, `{"a":[}]`: true, // brackets of either kind count alike
	} {
		if got := Complete([]byte(in), 0); got != want {
			t.Errorf("Complete(%q) = %v, want %v", in, got, want)
		}
	}
	deep := strings.Repeat("[", 600) + strings.Repeat("]", 600)
	if Complete([]byte(deep), 0) {
		t.Error("a document deeper than MaxDepth is complete")
	}
}
