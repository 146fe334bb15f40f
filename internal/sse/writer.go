package sse

import "bytes"

// AppendEvent appends one event in wire framing to dst: "event: typ\n"
// (omitted when typ is empty), "data: " data "\n\n". data must be JSON.
// Line breaks in it (an upstream that split its JSON over several data:
// lines) are written as spaces, which JSON reads as the same whitespace, so
// the event stays on one data: line as clients of the Responses API expect.
func AppendEvent(dst []byte, typ string, data []byte) []byte {
	if typ != "" {
		dst = append(dst, "event: "...)
		dst = append(dst, typ...)
		dst = append(dst, '\n')
	}
	dst = append(dst, "data: "...)
	start := len(dst)
	dst = append(dst, data...)
	if bytes.IndexByte(data, '\n') >= 0 || bytes.IndexByte(data, '\r') >= 0 {
		for i, c := range dst[start:] {
			if c == '\n' || c == '\r' {
				dst[start+i] = ' '
			}
		}
	}
	return append(dst, '\n', '\n')
}

// Ping is the keepalive comment the relay writes while waiting.
var Ping = []byte(": ping\n\n")
