package chat

import (
	"bytes"
	"encoding/json"
	"strconv"
	"testing"
)

// seqIDs makes ids prefix1, prefix2, ... counted per prefix, so that the
// same content yields the same ids whichever path built it.
func seqIDs() IDs {
	n := map[string]int{}
	return func(prefix string) string {
		n[prefix]++
		return prefix + strconv.Itoa(n[prefix])
	}
}

// norm is JSON with sorted keys and no spaces, for comparing documents
// regardless of member order.
func norm(t testing.TB, s []byte) string {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(s))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, s)
	}
	out, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func sameJSON(t testing.TB, got []byte, want string) {
	t.Helper()
	if g, w := norm(t, got), norm(t, []byte(want)); g != w {
		t.Errorf("JSON differs\n got: %s\nwant: %s", g, w)
	}
}
