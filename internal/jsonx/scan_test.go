package jsonx

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// valid is what Scanner makes of doc: one value read with Skip, then End.
func valid(doc []byte, max int) bool {
	var s Scanner
	s.Reset(doc, max)
	s.Skip()
	return s.End()
}

func TestScannerValidity(t *testing.T) {
	cases := []string{
		`{}`, `[]`, `{"a":1}`, `{"a":[1,2,{"b":null}],"c":"x"}`, ` { "a" : [ true , false ] } `,
		`"s"`, `0`, `-0.5e+10`, `1E3`, `null`, `"\u00e9\n\"\\\/\b\f\r\t"`, "\"\xff\"",
		// invalid
		``, ` `, `{`, `}`, `{"a"}`, `{"a":}`, `{"a":1,}`, `[1,]`, `[,1]`, `{,"a":1}`, `[1 2]`, `{"a":1 "b":2}`,
		`{1:2}`, `[}`, `{]`, `01`, `-`, `1.`, `.5`, `1e`, `+1`, `tru`, `nul`, `truex`, `"a`, `"\x"`, `"\u12"`,
		`"\u12g4"`, "\"a\x01\"", "\"\t\"", `[1]]`, `{} {}`, `"a" x`, `NaN`, `[--1]`,
	}
	for _, c := range cases {
		if got, want := valid([]byte(c), 0), json.Valid([]byte(c)); got != want {
			t.Errorf("%q: valid %v, encoding/json %v", c, got, want)
		}
	}
}

func TestScannerDepth(t *testing.T) {
	if !valid(nested(MaxDepth), 0) {
		t.Fatal("MaxDepth levels rejected")
	}
	if valid(nested(MaxDepth+1), 0) {
		t.Fatal("MaxDepth+1 levels accepted")
	}
	if valid(bytes.Repeat([]byte("["), 1_000_000), 0) {
		t.Fatal("a million open brackets accepted")
	}
	obj := strings.Repeat(`{"a":`, 10) + "1" + strings.Repeat("}", 10)
	if valid([]byte(obj), 9) || !valid([]byte(obj), 10) {
		t.Fatal("objects counted wrong")
	}
	deep := bytes.Repeat([]byte("["), 1_000_000)
	if n := testing.AllocsPerRun(5, func() { valid(deep, 0) }); n != 0 {
		t.Fatalf("%v allocations per scan", n)
	}
}

// TestScannerWalk reads members the way a caller does: keys as they stand,
// values kept, the rest skipped.
func TestScannerWalk(t *testing.T) {
	doc := []byte(`{"skip":{"x":[1,{"y":"}"}]},"k":"v\"1","n":-12.5,"arr":["a",2],"t":true}`)
	var s Scanner
	s.Reset(doc, 0)
	var got []string
	if !s.BeginObject() {
		t.Fatal("not an object")
	}
	for s.NextMember() {
		key, _ := s.Key()
		switch string(key) {
		case "k":
			v, f := s.String()
			got = append(got, string(AppendUnescaped(nil, v)))
			if f&Escaped == 0 || !Verbatim(v, f) {
				t.Errorf("flags %b", f)
			}
		case "n":
			got = append(got, string(s.Number()))
		case "arr":
			for s.BeginArray(); s.NextElement(); {
				s.Peek()
				start := s.Offset()
				s.Skip()
				got = append(got, string(doc[start:s.Offset()]))
			}
		default:
			s.Skip()
		}
	}
	if !s.End() {
		t.Fatal("valid document rejected")
	}
	if want := []string{`v"1`, "-12.5", `"a"`, "2"}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestScannerEnter(t *testing.T) {
	const head = `[{"a":0,"b":{`
	var s Scanner
	s.Reset([]byte(`{"x": `+head+`"c":1}}],"y":2}`), 0)
	s.BeginObject()
	s.NextMember()
	s.Key()
	if s.Enter(`[{"a":1`, 2) || !s.Enter(head, 3) {
		t.Fatal("Enter matched the wrong bytes")
	}
	for s.NextMember() { // inside "b"
		s.Key()
		s.Skip()
	}
	for s.NextMember() { // the rest of the object holding "b"
		s.Key()
		s.Skip()
	}
	for s.NextElement() {
		s.Skip()
	}
	for s.NextMember() {
		s.Key()
		s.Skip()
	}
	if !s.End() {
		t.Fatal("document rejected after Enter")
	}
	// Enter counts the levels it opens.
	s.Reset([]byte(`[[`+head+`}}]]]`), 4)
	s.BeginArray()
	s.NextElement()
	s.BeginArray()
	s.NextElement()
	if s.Enter(head, 3) {
		t.Fatal("Enter went past the depth limit")
	}
}

func TestUnescapeAndVerbatim(t *testing.T) {
	cases := []struct {
		raw      string
		verbatim bool
	}{
		{`plain`, true}, {`a\"b\\c\nd\re\tf`, true}, {`naïve ☃`, true},
		{`\/`, false}, {`\b\f`, false}, {`\u0041`, false}, {`\u00e9`, false}, {`\ud83d\ude00`, false},
		{`\ud800`, false}, {`\ud800\u0041`, false}, {`\udc00\ud800`, false},
		{"\u2028", false}, {"\u2029x", false}, {"\xff", false}, {"\xe2\x80", false},
	}
	for _, c := range cases {
		doc := []byte(`"` + c.raw + `"`)
		var s Scanner
		s.Reset(doc, 0)
		raw, f := s.String()
		if !s.End() {
			t.Errorf("%q rejected", c.raw)
			continue
		}
		dec := AppendUnescaped(nil, raw)
		if utf8.ValidString(c.raw) {
			var want string
			if err := json.Unmarshal(doc, &want); err != nil || string(dec) != want {
				t.Errorf("%q decodes to %q, encoding/json %q (%v)", c.raw, dec, want, err)
			}
		}
		if got := Verbatim(raw, f); got != c.verbatim {
			t.Errorf("%q: Verbatim %v", c.raw, got)
		}
		if Verbatim(raw, f) && string(AppendString(nil, string(dec))) != string(doc) {
			t.Errorf("%q: verbatim but encodes to %s", c.raw, AppendString(nil, string(dec)))
		}
	}
}

// FuzzScanner checks the scanner against encoding/json: the same documents
// are valid, a string's decoded value is the same, and a string said to be
// verbatim is what AppendString writes for its value.
func FuzzScanner(f *testing.F) {
	for _, s := range []string{`{"a":[1,"x\n",{"b":null}]}`, `"\ud83d\ude00 \u00e9"`, `[1e5,-0.1,true]`, "\"a\xffb\"", `{"a":1,}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		if got, want := valid(doc, 10000), json.Valid(doc); got != want {
			t.Fatalf("%q: valid %v, encoding/json %v", doc, got, want)
		}
		var s Scanner
		s.Reset(doc, 0)
		if s.Peek() != '"' {
			return
		}
		raw, fl := s.String()
		if !s.End() {
			return
		}
		dec := AppendUnescaped(nil, raw)
		var want string
		if err := json.Unmarshal(doc, &want); err != nil {
			t.Fatalf("%q: %v", doc, err)
		}
		// encoding/json turns each invalid UTF-8 byte into U+FFFD, as a
		// conversion to runes does.
		if string([]rune(string(dec))) != want {
			t.Fatalf("%q decodes to %q, encoding/json %q", doc, dec, want)
		}
		if Verbatim(raw, fl) && string(AppendString(nil, string(dec))) != `"`+string(raw)+`"` {
			t.Fatalf("%q: verbatim but encodes to %s", doc, AppendString(nil, string(dec)))
		}
	})
}
