package relaytest

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestCompactJSON(t *testing.T) {
	in := "{\n  \"a\": [1, 2],\r\n  \"b\": \"x y\\\" z\"\n}"
	if got, want := compactJSON(in), `{"a":[1,2],"b":"x y\" z"}`; got != want {
		t.Errorf("compactJSON = %s, want %s", got, want)
	}
	if got := compactJSON(`{"a": 1}`); got != `{"a": 1}` {
		t.Errorf("single-line input changed: %s", got)
	}
}

func TestSplitRunes(t *testing.T) {
	for _, c := range []struct {
		s string
		n int
	}{{"abcde", 5}, {"abcdefghij", 3}, {"☃☃☃☃", 2}, {"a☃b☃c☃d", 7}, {"x", 1}} {
		cuts := splitRunes(c.s, c.n)
		var joined strings.Builder
		for i := range c.n {
			piece := c.s[cuts[i]:cuts[i+1]]
			if piece == "" || !utf8.ValidString(piece) {
				t.Errorf("%q/%d: piece %d = %q", c.s, c.n, i, piece)
			}
			joined.WriteString(piece)
		}
		if joined.String() != c.s {
			t.Errorf("%q/%d: pieces join to %q", c.s, c.n, joined.String())
		}
	}
}
