package wsconn

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/internal/leakcheck"
)

// clientFrame is a frame as the client wrote it, payload unmasked.
type clientFrame struct {
	fin, masked bool
	op          byte
	rsv         byte
	headerLen   int // bytes before the masking key
	payload     []byte
}

// parseClientFrame decodes one client frame from the start of b.
func parseClientFrame(b []byte) (f clientFrame, rest []byte, err error) {
	if len(b) < 2 {
		return f, nil, errors.New("short header")
	}
	f.fin = b[0]&0x80 != 0
	f.rsv = b[0] & 0x70
	f.op = b[0] & 0x0F
	f.masked = b[1]&0x80 != 0
	n := uint64(b[1] & 0x7F)
	f.headerLen = 2
	switch n {
	case 126:
		if len(b) < 4 {
			return f, nil, errors.New("short 16-bit length")
		}
		n, f.headerLen = uint64(binary.BigEndian.Uint16(b[2:])), 4
	case 127:
		if len(b) < 10 {
			return f, nil, errors.New("short 64-bit length")
		}
		n, f.headerLen = binary.BigEndian.Uint64(b[2:]), 10
	}
	b = b[f.headerLen:]
	var key []byte
	if f.masked {
		if len(b) < 4 {
			return f, nil, errors.New("short masking key")
		}
		key, b = b[:4], b[4:]
	}
	if uint64(len(b)) < n {
		return f, nil, fmt.Errorf("payload of %d bytes, %d there", n, len(b))
	}
	f.payload = bytes.Clone(b[:n])
	for i := range f.payload {
		if key != nil {
			f.payload[i] ^= key[i%4]
		}
	}
	return f, b[n:], nil
}

func TestWriteTextFrames(t *testing.T) {
	tests := []struct {
		size      int
		headerLen int
		lenByte   byte
	}{
		{0, 2, 0},
		{1, 2, 1},
		{125, 2, 125},
		{126, 4, 126},
		{65535, 4, 126},
		{65536, 10, 127},
		{100 << 10, 10, 127},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.size), func(t *testing.T) {
			f := newFake()
			c := newConn(f)
			p := payload(tt.size)
			orig := bytes.Clone(p)
			if err := c.WriteText(context.Background(), p); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(p, orig) {
				t.Fatal("WriteText changed the caller's bytes")
			}
			raw := bytes.Clone(f.out.Bytes())
			if raw[0] != 0x81 {
				t.Errorf("first byte %#x, want 0x81 (FIN, text)", raw[0])
			}
			if raw[1] != 0x80|tt.lenByte {
				t.Errorf("second byte %#x, want %#x (mask bit, length %d)", raw[1], 0x80|tt.lenByte, tt.lenByte)
			}
			frames := f.written(t)
			if len(frames) != 1 {
				t.Fatalf("%d frames, want 1", len(frames))
			}
			fr := frames[0]
			if !fr.masked || !fr.fin || fr.op != opText || fr.rsv != 0 || fr.headerLen != tt.headerLen {
				t.Errorf("frame %+v, want masked final text with a %d-byte header", fr, tt.headerLen)
			}
			if !bytes.Equal(fr.payload, p) {
				t.Error("payload differs after unmasking")
			}
			if tt.size >= 64 && bytes.Contains(raw, p[:64]) {
				t.Error("payload went out unmasked")
			}
		})
	}
}

func TestWriteTextChunks(t *testing.T) {
	f := newFake()
	c := newConn(f)
	p := payload(3*writeChunk + 1000)
	if err := c.WriteText(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	if len(f.writes) < 2 {
		t.Fatalf("%d write calls for %d bytes, want it in chunks", len(f.writes), len(p))
	}
	for i, n := range f.writes {
		if n > writeChunk+14 {
			t.Errorf("write %d is %d bytes, over a chunk and a header", i, n)
		}
	}
	frames := f.written(t)
	if len(frames) != 1 || !bytes.Equal(frames[0].payload, p) || !frames[0].fin {
		t.Fatalf("%d frames; want one final frame with the payload", len(frames))
	}

	// A small message afterwards is a frame of its own, with a small buffer.
	if err := c.WriteText(context.Background(), []byte("after")); err != nil {
		t.Fatal(err)
	}
	frames = f.written(t)
	if len(frames) != 2 || string(frames[1].payload) != "after" {
		t.Fatalf("frames after a small message: %d", len(frames))
	}
	if cap(c.wbuf) > keptWriteBuf {
		t.Errorf("write buffer of %d bytes kept", cap(c.wbuf))
	}
}

func TestWriteConcurrent(t *testing.T) {
	leakcheck.Check(t)
	f := newFake()
	c := newConn(f)
	const writers, each = 8, 50
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				msg := bytes.Repeat([]byte{byte('A' + w)}, 1+(w*each+i)*37%3000)
				if err := c.WriteText(context.Background(), msg); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	frames := f.written(t)
	if len(frames) != writers*each {
		t.Fatalf("%d frames, want %d", len(frames), writers*each)
	}
	for i, fr := range frames {
		if len(fr.payload) == 0 || !bytes.Equal(fr.payload, bytes.Repeat(fr.payload[:1], len(fr.payload))) {
			t.Fatalf("frame %d mixes writers", i)
		}
	}
}

func TestMask(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		var key [4]byte
		binary.LittleEndian.PutUint32(key[:], r.Uint32())
		pos := r.IntN(1 << 20)
		n := r.IntN(100)
		if r.IntN(10) == 0 {
			n = r.IntN(70000)
		}
		orig := make([]byte, n)
		for i := range orig {
			orig[i] = byte(r.Uint32())
		}
		want := bytes.Clone(orig)
		for i := range want {
			want[i] ^= key[(pos+i)%4]
		}
		b := bytes.Clone(orig)
		if end := mask(key, pos, b); end != pos+n {
			t.Fatalf("mask(pos %d, len %d) = %d, want %d", pos, n, end, pos+n)
		}
		if !bytes.Equal(b, want) {
			t.Fatalf("mask(key % x, pos %d, len %d) differs from the byte loop", key, pos, n)
		}
		// Masking in two pieces is masking at once.
		split := r.IntN(n + 1)
		b = bytes.Clone(orig)
		mask(key, mask(key, pos, b[:split]), b[split:])
		if !bytes.Equal(b, want) {
			t.Fatalf("mask of len %d in two pieces at %d differs", n, split)
		}
	}
}

// writingConn is a net.Pipe end whose Write reports that it was entered.
type writingConn struct {
	net.Conn
	writing chan struct{}
	once    sync.Once
}

func (w *writingConn) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.writing) })
	return w.Conn.Write(p)
}

func TestWriteTextContextEndsWhileBlocked(t *testing.T) {
	leakcheck.Check(t)
	client, server := net.Pipe() // the server never reads
	defer server.Close()
	wc := &writingConn{Conn: client, writing: make(chan struct{})}
	c := newConn(wc)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.WriteText(ctx, payload(1000)) }()
	<-wc.writing
	select {
	case err := <-done:
		t.Fatalf("WriteText returned %v while the peer does not read", err)
	default:
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("WriteText = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WriteText still blocked after its context ended")
	}
	select {
	case <-c.Closed():
	default:
		t.Fatal("connection not closed")
	}
	if err := c.WriteText(context.Background(), []byte("x")); err != ErrClosed {
		t.Errorf("next WriteText = %v, want ErrClosed", err)
	}
	if _, err := c.Read(); err != ErrClosed {
		t.Errorf("Read = %v, want ErrClosed", err)
	}
}

func TestWriteTextContextDeadline(t *testing.T) {
	leakcheck.Check(t)
	client, server := net.Pipe()
	defer server.Close()
	c := newConn(client)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := c.WriteText(ctx, []byte("nobody reads")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WriteText = %v, want context.DeadlineExceeded", err)
	}
}

func TestPingContextEndsWhileBlocked(t *testing.T) {
	leakcheck.Check(t)
	client, server := net.Pipe() // the server never reads
	defer server.Close()
	wc := &writingConn{Conn: client, writing: make(chan struct{})}
	c := newConn(wc)
	defer c.CloseNow()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Ping(ctx) }()
	<-wc.writing
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Ping = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Ping still blocked in its write after its context ended")
	}
}

func TestPingPong(t *testing.T) {
	leakcheck.Check(t)
	client, server := net.Pipe()
	defer server.Close()
	c := newConn(client)

	// The server answers each ping with a pong carrying its payload.
	served := make(chan error, 1)
	go func() {
		served <- func() error {
			buf := make([]byte, 0, 64)
			tmp := make([]byte, 64)
			for pings := 0; pings < 2; {
				n, err := server.Read(tmp)
				if err != nil {
					return err
				}
				buf = append(buf, tmp[:n]...)
				fr, rest, err := parseClientFrame(buf)
				if err != nil {
					continue // not whole yet
				}
				buf = append(buf[:0], rest...)
				if fr.op != opPing || !fr.masked || !fr.fin {
					return fmt.Errorf("got frame %+v, want a masked ping", fr)
				}
				if _, err := server.Write(frame(true, opPong, fr.payload)); err != nil {
					return err
				}
				pings++
			}
			return nil
		}()
	}()
	readErr := readInBackground(c)
	for i := range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := c.Ping(ctx)
		cancel()
		if err != nil {
			t.Fatalf("Ping %d: %v", i, err)
		}
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	c.CloseNow()
	if err := <-readErr; err != ErrClosed {
		t.Errorf("Read after CloseNow = %v, want ErrClosed", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Ping(ctx); err != ErrClosed {
		t.Errorf("Ping after CloseNow = %v, want ErrClosed", err)
	}
}

func TestWriteAfterPeerGone(t *testing.T) {
	client, server := net.Pipe()
	server.Close()
	c := newConn(client)
	err := c.WriteText(context.Background(), []byte("x"))
	if err == nil || !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("WriteText = %v, want the pipe's error", err)
	}
	select {
	case <-c.Closed():
	default:
		t.Fatal("a failed write left the connection open")
	}
}

// TestWriteTextEndedContext: a context that ended before the write sends
// nothing and leaves the connection usable.
func TestWriteTextEndedContext(t *testing.T) {
	f := newFake()
	c := newConn(f)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.WriteText(ctx, []byte("hi")); !errors.Is(err, context.Canceled) {
		t.Fatalf("WriteText = %v, want context.Canceled", err)
	}
	f.mu.Lock()
	n, closed := len(f.writes), f.closed
	f.mu.Unlock()
	if n != 0 || closed {
		t.Fatalf("after an ended context: %d writes, closed %v", n, closed)
	}
	if err := c.WriteText(context.Background(), []byte("hi")); err != nil {
		t.Fatalf("the next WriteText = %v", err)
	}
}
