package wsproxy

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
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

// TestHeldFrames: messages the library writes through a held connection,
// of every header size, are read back whole and in order by a WebSocket
// client, with the library's own control frames (a ping) between them.
func TestHeldFrames(t *testing.T) {
	sizes := []int{0, 1, 125, 126, 127, 1000, 65535, 65536, 100000}
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(done)
		bw := &batchWriter{ResponseWriter: w}
		ws, err := websocket.Accept(bw, r, nil)
		if err != nil {
			t.Error(err)
			return
		}
		defer ws.CloseNow()
		go ws.Read(context.Background()) // answers the client's pongs; ends at close
		for i, n := range sizes {
			payload := bytes.Repeat([]byte{byte('a' + i)}, n)
			if i%2 == 1 {
				bw.conn.hold()
			}
			if err := ws.Write(context.Background(), websocket.MessageText, payload); err != nil {
				t.Error(err)
				return
			}
			if i%3 == 0 {
				if err := bw.conn.release(); err != nil {
					t.Error(err)
					return
				}
			}
			if i == 4 {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				err := ws.Ping(ctx) // a control frame between held data frames
				cancel()
				if err != nil {
					t.Error(err)
					return
				}
			}
		}
		if err := bw.conn.release(); err != nil {
			t.Error(err)
		}
		ws.Close(websocket.StatusNormalClosure, "")
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	c.SetReadLimit(1 << 20)
	for i, n := range sizes {
		typ, data, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if typ != websocket.MessageText || len(data) != n || (n > 0 && (data[0] != byte('a'+i) || data[n-1] != byte('a'+i))) {
			t.Fatalf("message %d: type %v, %d bytes, want %d", i, typ, len(data), n)
		}
	}
	if _, _, err := c.Read(ctx); websocket.CloseStatus(err) != websocket.StatusNormalClosure {
		t.Fatalf("after the messages: %v", err)
	}
	<-done
}

// TestBatchConnClose: closing the connection writes out what is held
// first, so a close frame the library wrote while held is not lost.
func TestBatchConnClose(t *testing.T) {
	cc := &countConn{Conn: nopConn{}}
	bc := &batchConn{Conn: cc}
	bc.hold()
	bc.Write([]byte("event"))
	bc.Write([]byte("close"))
	if len(cc.writes) != 0 {
		t.Fatalf("held writes reached the socket: %q", cc.writes)
	}
	if err := bc.Close(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cc.writes, "|"); got != "eventclose" {
		t.Fatalf("writes at close %q", got)
	}
}

// nopConn is a net.Conn whose Close succeeds.
type nopConn struct{ net.Conn }

func (nopConn) Close() error { return nil }
