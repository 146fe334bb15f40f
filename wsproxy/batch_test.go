package wsproxy

import (
	"errors"
	"net"
	"strings"
	"testing"
)

// countConn records each Write that reaches the socket.
type countConn struct {
	net.Conn
	writes []string
	fail   error
}

func (c *countConn) Write(p []byte) (int, error) {
	if c.fail != nil {
		return 0, c.fail
	}
	c.writes = append(c.writes, string(p))
	return len(p), nil
}

// TestBatchConn: held writes reach the socket in one write, in order, at
// release; unheld writes go straight through; a failed flush fails the
// writes after it.
func TestBatchConn(t *testing.T) {
	cc := &countConn{}
	bc := &batchConn{Conn: cc}
	bc.Write([]byte("a"))
	bc.hold()
	bc.Write([]byte("b"))
	bc.Write([]byte("c"))
	if len(cc.writes) != 1 {
		t.Fatalf("held writes reached the socket: %q", cc.writes)
	}
	if err := bc.release(); err != nil {
		t.Fatal(err)
	}
	bc.Write([]byte("d"))
	if got := strings.Join(cc.writes, "|"); got != "a|bc|d" {
		t.Fatalf("writes %q", got)
	}
	if err := bc.release(); err != nil || len(cc.writes) != 3 {
		t.Fatalf("an empty release wrote: %v %q", err, cc.writes)
	}

	// A burst past maxHeld is written early.
	bc.hold()
	big := strings.Repeat("x", maxHeld)
	bc.Write([]byte(big))
	if len(cc.writes) != 4 {
		t.Fatalf("%d writes after a burst over the cap", len(cc.writes))
	}
	bc.release()

	cc.fail = errors.New("broken pipe")
	bc.hold()
	if _, err := bc.Write([]byte("e")); err != nil {
		t.Fatal("a held write failed before the flush")
	}
	if err := bc.release(); err == nil {
		t.Fatal("release hid the failed write")
	}
	cc.fail = nil
	if _, err := bc.Write([]byte("f")); err == nil {
		t.Fatal("a write after a failed flush succeeded")
	}
}
