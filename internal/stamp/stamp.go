// Package stamp writes and reads the write time the fake upstream puts in
// a delta event's obfuscation string (relaytest's "stamp" event option),
// so that a client in the same process can tell how long each event took
// to reach it.
package stamp

import (
	"strconv"
	"time"

	"github.com/tidwall/gjson"
)

// Append appends now as a JSON string of Unix nanoseconds.
func Append(b []byte, now time.Time) []byte {
	b = append(b, '"')
	b = strconv.AppendInt(b, now.UnixNano(), 10)
	return append(b, '"')
}

// Parse reads the time a stamped delta event was written from its JSON;
// ok is false for other events.
func Parse(event []byte) (sent time.Time, ok bool) {
	o := gjson.GetBytes(event, "obfuscation")
	if o.Type != gjson.String || o.Str == "" {
		return time.Time{}, false
	}
	ns, err := strconv.ParseInt(o.Str, 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(0, ns), true
}
