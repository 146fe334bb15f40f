//go:build !unix

package h1

import "net"

// alive cannot look at the socket here: a connection the upstream closed
// while idle fails its next request, as over net/http's transport when the
// close and the request cross.
func alive(net.Conn) bool { return true }
