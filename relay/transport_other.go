//go:build !unix

package relay

import "errors"

// Elsewhere a connection is read as it is, without reading ahead.
const readAheadSupported = false

var errNothingWaiting = errors.ErrUnsupported

func readNow(uintptr, []byte) (int, error) { return 0, errNothingWaiting }
