//go:build unix

package h1

import (
	"net"
	"syscall"
)

// alive says whether a pooled connection may carry a request: the
// upstream has not closed it (no end of stream waiting) nor sent anything
// unasked. net/http's transport learns this from the read loop each
// connection has; this client asks the socket, without blocking, as it
// takes the connection from the pool.
func alive(nc net.Conn) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	ok = false
	var buf [1]byte
	err = rc.Read(func(fd uintptr) bool {
		n, _, rerr := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		ok = n < 0 && (rerr == syscall.EAGAIN || rerr == syscall.EWOULDBLOCK)
		return true // never wait
	})
	return err == nil && ok
}
