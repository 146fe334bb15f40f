package relay

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

// pongFrame is a small whole frame as the library writes one.
func pongFrame(payload string) []byte { return append([]byte{0x8A, byte(len(payload))}, payload...) }

// TestBatchConn: held writes reach the socket in one write, in order, at
// release; unheld writes go straight through; a failed flush fails the
// writes after it.
func TestBatchConn(t *testing.T) {
	cc := &countConn{}
	bc := &batchConn{Conn: cc}
	a, b, c, d := pongFrame("a"), pongFrame("b"), pongFrame("c"), pongFrame("d")
	bc.Write(a)
	bc.hold()
	bc.Write(b)
	bc.Write(c)
	if len(cc.writes) != 1 {
		t.Fatalf("held writes reached the socket: %q", cc.writes)
	}
	if err := bc.release(); err != nil {
		t.Fatal(err)
	}
	bc.Write(d)
	if got, want := strings.Join(cc.writes, "|"), string(a)+"|"+string(b)+string(c)+"|"+string(d); got != want {
		t.Fatalf("writes %q, want %q", got, want)
	}
	if err := bc.release(); err != nil || len(cc.writes) != 3 {
		t.Fatalf("an empty release wrote: %v %q", err, cc.writes)
	}

	// A burst past maxHeld is written early.
	bc.hold()
	if err := bc.writeText([]byte(strings.Repeat("x", maxHeld)), false); err != nil {
		t.Fatal(err)
	}
	if len(cc.writes) != 4 {
		t.Fatalf("%d writes after a burst over the cap", len(cc.writes))
	}
	bc.release()

	cc.fail = errors.New("broken pipe")
	bc.hold()
	if _, err := bc.Write(pongFrame("e")); err != nil {
		t.Fatal("a held write failed before the flush")
	}
	if err := bc.release(); err == nil {
		t.Fatal("release hid the failed write")
	}
	cc.fail = nil
	if _, err := bc.Write(pongFrame("f")); err == nil {
		t.Fatal("a write after a failed flush succeeded")
	}
}

// TestFrames: messages of every header size, written held or not, by the
// relay (writeText) or by the library, are read back whole and in order
// by a WebSocket client, with the library's own control frames (a ping)
// between them.
func TestFrames(t *testing.T) {
	for name, write := range map[string]func(ws *websocket.Conn, bc *batchConn, p []byte, flush bool) error{
		"relay": func(_ *websocket.Conn, bc *batchConn, p []byte, flush bool) error { return bc.writeText(p, flush) },
		"library": func(ws *websocket.Conn, bc *batchConn, p []byte, flush bool) error {
			if err := ws.Write(context.Background(), websocket.MessageText, p); err != nil || !flush {
				return err
			}
			return bc.release()
		},
	} {
		t.Run(name, func(t *testing.T) { testFrames(t, write) })
	}
}

func testFrames(t *testing.T, write func(ws *websocket.Conn, bc *batchConn, p []byte, flush bool) error) {
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
			if i%2 == 1 {
				bw.conn.hold()
			}
			if err := write(ws, bw.conn, bytes.Repeat([]byte{byte('a' + i)}, n), i%3 == 0); err != nil {
				t.Error(err)
				return
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

// TestBatchConnLibraryFrameSplit: a library frame written in pieces,
// however small, reaches the socket whole, and a relay frame written in
// between goes out before it, never inside it; a close frame is known by
// its parsed opcode, and no relay frame follows it.
func TestBatchConnLibraryFrameSplit(t *testing.T) {
	cc := &countConn{}
	bc := &batchConn{Conn: cc}
	pong := []byte{0x8A, 3, 'a', 'b', 'c'}
	for i, b := range pong {
		if _, err := bc.Write([]byte{b}); err != nil {
			t.Fatal(err)
		}
		if i == 2 {
			if err := bc.writeText([]byte(`{"type":"x"}`), true); err != nil {
				t.Fatal(err)
			}
		}
	}
	closeFrame := []byte{0x88, 2, 0x03, 0xE8}
	bc.Write(closeFrame[:1])
	if err := bc.writeText([]byte(`{"type":"y"}`), true); err != nil {
		t.Fatalf("a relay frame before the close frame is complete: %v", err)
	}
	bc.Write(closeFrame[1:])
	if err := bc.writeText([]byte(`{"type":"z"}`), true); !errors.Is(err, errCloseSent) {
		t.Fatalf("a relay frame after the close frame: %v", err)
	}
	got := strings.Join(cc.writes, "")
	x := string([]byte{0x81, 12}) + `{"type":"x"}`
	y := string([]byte{0x81, 12}) + `{"type":"y"}`
	if want := x + string(pong) + y + string(closeFrame); got != want {
		t.Fatalf("stream %q\nwant  %q", got, want)
	}
}

func TestFrameLen(t *testing.T) {
	for _, c := range []struct {
		b  []byte
		n  int
		op byte
	}{
		{[]byte{0x8A}, 0, 0},
		{[]byte{0x89, 0}, 2, 0x9},
		{[]byte{0x81, 126, 0x01}, 0, 0},
		{[]byte{0x81, 126, 0x01, 0x00}, 4 + 256, 0x1},
		{[]byte{0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0}, 10 + 65536, 0x2},
		{[]byte{0x88, 0x82}, 2 + 4 + 2, 0x8}, // masked
	} {
		if n, op := frameLen(c.b); n != c.n || op != c.op {
			t.Errorf("frameLen(% x) = %d, %#x; want %d, %#x", c.b, n, op, c.n, c.op)
		}
	}
}

// TestBatchConnCloseFrame: a close frame from the library goes out at
// once, after what was held, and no event frame may follow it.
func TestBatchConnCloseFrame(t *testing.T) {
	cc := &countConn{}
	bc := &batchConn{Conn: cc}
	bc.hold()
	if err := bc.writeText([]byte(`{"type":"a"}`), false); err != nil {
		t.Fatal(err)
	}
	pong := []byte{0x8A, 0}
	bc.Write(pong) // a control frame other than close waits for the release
	if len(cc.writes) != 0 {
		t.Fatalf("held writes reached the socket: %q", cc.writes)
	}
	closeFrame := []byte{0x88, 2, 0x03, 0xE8}
	if n, err := bc.Write(closeFrame); err != nil || n != len(closeFrame) {
		t.Fatalf("close frame: %d, %v", n, err)
	}
	if len(cc.writes) != 1 || !strings.HasSuffix(cc.writes[0], string(closeFrame)) || !strings.Contains(cc.writes[0], `{"type":"a"}`) {
		t.Fatalf("writes %q", cc.writes)
	}
	if err := bc.writeText([]byte(`{"type":"b"}`), true); !errors.Is(err, errCloseSent) {
		t.Fatalf("event after the close frame: %v", err)
	}
	if len(cc.writes) != 1 {
		t.Fatalf("an event followed the close frame: %q", cc.writes)
	}
}
