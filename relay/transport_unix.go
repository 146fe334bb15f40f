//go:build unix

package relay

import "syscall"

const readAheadSupported = true

// errNothingWaiting is readNow's error when nothing is waiting.
const errNothingWaiting = syscall.EAGAIN

// readNow reads what is waiting on the non-blocking descriptor fd, without
// waiting for more.
func readNow(fd uintptr, b []byte) (int, error) {
	for {
		n, err := syscall.Read(int(fd), b)
		if err != syscall.EINTR {
			return max(n, 0), err
		}
	}
}
