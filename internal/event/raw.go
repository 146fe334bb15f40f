package event

import (
	"unsafe"

	"github.com/tidwall/gjson"
)

// Raw is v's JSON as a subslice of b, the document gjson found it in (a
// copy of its Raw when it did not record where).
func Raw(b []byte, v gjson.Result) []byte {
	if v.Index > 0 && v.Index+len(v.Raw) <= len(b) {
		return b[v.Index : v.Index+len(v.Raw)]
	}
	return []byte(v.Raw)
}

// RawAt is the JSON at path in b as a subslice of b, without the copy
// gjson.GetBytes makes; nil when absent.
func RawAt(b []byte, path string) []byte {
	v := gjson.Get(unsafe.String(unsafe.SliceData(b), len(b)), path)
	if !v.Exists() || v.Index <= 0 {
		return nil
	}
	return b[v.Index : v.Index+len(v.Raw)]
}
