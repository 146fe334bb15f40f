package relay

import (
	"strings"
	"testing"
)

// Error bodies of the usual shapes: most carry no key and no escape; some
// have escapes (newlines, quotes) but no key; a few echo the key.
var (
	benchKey      = "sk-proj-BENCHKEY-0123456789abcdefXYZ"
	benchPlain    = []byte(`{"error":{"message":"Rate limit reached for gpt-test in organization org-abc on tokens per min (TPM): Limit 30000, Used 29000, Requested 2000. Please try again in 2s.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}`)
	benchEscapes  = []byte(`{"error":{"message":"The model said:\n\"no\" \/ please retry.\nDetails: ` + strings.Repeat(`line\n`, 20) + `","type":"server_error","param":null,"code":"server_error"}}`)
	benchNewlines = []byte(`{"error":{"message":"The model said:\n\"no\", please retry.\nDetails: ` + strings.Repeat(`line\n`, 20) + `","type":"server_error","param":null,"code":"server_error"}}`)
	benchKeyPlain = []byte(`{"error":{"message":"Incorrect API key provided: ` + benchKey + `. You can find your API key at the dashboard.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`)
	benchKeyEsc   = []byte(`{"error":{"message":"Incorrect API key provided: sk\u002dproj\u002dBENCHKEY\u002d0123456789abcdefXYZ.\nYou can find your API key at the dashboard.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`)
)

func BenchmarkSanitize(b *testing.B) {
	for _, c := range []struct {
		name string
		body []byte
	}{{"plain", benchPlain}, {"newlines", benchNewlines}, {"escapes", benchEscapes}, {"key", benchKeyPlain}, {"escaped key", benchKeyEsc}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(c.body)))
			for b.Loop() {
				sanitize(c.body, benchKey)
			}
		})
	}
}
