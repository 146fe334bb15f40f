package relay

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestSanitizeEscapedSpellings: each spelling alone, decoded as a client
// would, no longer holds the key; text without a key is left as it was.
func TestSanitizeEscapedSpellings(t *testing.T) {
	const secret = "eyJSECRET/a1b2c3d4/Zz9Yy8"
	const other = "sk-proj-OTHERKEY-0123456789" // not a known secret: pattern only
	for _, c := range []struct{ spelled, key string }{
		{`sk\u002dproj\u002dOTHERKEY\u002d0123456789`, other},
		{`\u0073k-proj-OTHERKEY-0123456789`, other},
		{`\u0073\u006B\u002Dproj\u002dOTHERKEY-0123456789`, other},
		{`s\u006b-proj-OTHERKEY-0123456789`, other},
		{`\nsk-proj-OTHERKEY-0123456789`, other},
		{`\tsk-proj-OTHERKEY-0123456789`, other},
		{`eyJSECRET\/a1b2c3d4\/Zz9Yy8`, secret},
		{`\u0065yJSECRET\u002Fa1b2c3d4\u002fZz9Yy8`, secret},
		{`eyJSECRET\\\/a1b2c3d4\\\/Zz9Yy8`, secret},
		{`sk\\u002dproj\\u002DOTHERKEY-0123456789`, other},
	} {
		body := `{"error":{"message":"bad key: ` + c.spelled + `, rejected","code":null}}`
		got := sanitize([]byte(body), secret)
		var v struct{ Error struct{ Message string } }
		if err := json.Unmarshal(got, &v); err != nil {
			t.Fatalf("%s: sanitized body is not JSON: %v\n%s", c.spelled, err, got)
		}
		msg := v.Error.Message
		var twice string
		json.Unmarshal([]byte(`"`+msg+`"`), &twice)
		if strings.Contains(msg, c.key) || strings.Contains(twice, c.key) || strings.Contains(msg, "OTHERKEY") || strings.Contains(msg, "SECRET") {
			t.Fatalf("%s: key left in %q (%s)", c.spelled, msg, got)
		}
		if !strings.HasPrefix(msg, "bad key: ") || !strings.HasSuffix(msg, ", rejected") {
			t.Fatalf("%s: more than the key was masked: %q", c.spelled, msg)
		}
	}
	for _, body := range []string{
		`{"error":{"message":"path C:\\users\\task-runner\u0020is \"busy\"\nretry"}}`,
		`{"error":{"message":"ask\u002dme later"}}`,
	} {
		if got := sanitize([]byte(body), secret); string(got) != body {
			t.Fatalf("changed a body without a key:\n%s\n%s", body, got)
		}
	}
}
