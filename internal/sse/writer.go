package sse

// AppendEvent appends one event in wire framing to dst: "event: typ\n"
// (omitted when typ is empty), "data: " data "\n\n". data must be one line
// of JSON, which is what the Responses API and the relay produce.
func AppendEvent(dst []byte, typ string, data []byte) []byte {
	if typ != "" {
		dst = append(dst, "event: "...)
		dst = append(dst, typ...)
		dst = append(dst, '\n')
	}
	dst = append(dst, "data: "...)
	dst = append(dst, data...)
	return append(dst, '\n', '\n')
}

// Ping is the keepalive comment the relay writes while waiting.
var Ping = []byte(": ping\n\n")
