//go:build unix

package relay

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
)

// countedConn counts the plain reads of the connection under a burstConn
// (its read-aheads go through SyscallConn and are not counted).
type countedConn struct {
	*net.TCPConn
	reads atomic.Int64
}

func (c *countedConn) Read(p []byte) (int, error) {
	c.reads.Add(1)
	return c.TCPConn.Read(p)
}

func (c *countedConn) SyscallConn() (syscall.RawConn, error) { return c.TCPConn.SyscallConn() }

// tcpPair is a loopback TCP connection: the client end and the server's.
func tcpPair(t *testing.T) (client *net.TCPConn, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// TestBurstConnReadsAhead: a burst waiting on the socket is read in a few
// system calls through a 1 KiB read buffer (the transport's), not one per
// kilobyte, every byte arrives in order, and once it is read no buffer is
// held.
func TestBurstConnReadsAhead(t *testing.T) {
	client, server := tcpPair(t)
	burst := make([]byte, 16<<10)
	for i := range burst {
		burst[i] = byte(i * 7)
	}
	if _, err := server.Write(burst); err != nil {
		t.Fatal(err)
	}
	server.CloseWrite()
	cc := &countedConn{TCPConn: client}
	bc := newBurstConn(cc).(*burstConn)
	got, err := io.ReadAll(bufio.NewReaderSize(bc, 1<<10))
	if err != nil || !bytes.Equal(got, burst) {
		t.Fatalf("read %d bytes, err %v; equal %v", len(got), err, bytes.Equal(got, burst))
	}
	// Without the read-ahead: 17 reads (16 fills of 1 KiB and the end).
	if n := cc.reads.Load(); n > 4 {
		t.Fatalf("%d plain reads for a 16 KiB burst through a 1 KiB buffer, want at most 4", n)
	}
	if bc.buf != nil {
		t.Fatal("a read-ahead buffer is held after the burst was read")
	}
}

// TestBurstConnWaitsWithoutBuffer: a read-ahead that finds nothing waiting
// holds no buffer, and the next read waits as a plain read would.
func TestBurstConnWaitsWithoutBuffer(t *testing.T) {
	client, server := tcpPair(t)
	bc := newBurstConn(client).(*burstConn)
	if _, err := server.Write(make([]byte, 512)); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 512)
	if _, err := io.ReadFull(bc, p); err != nil {
		t.Fatal(err)
	}
	if !bc.full {
		t.Fatal("a read that filled its buffer did not ask for a read-ahead")
	}
	if err := bc.readAhead(); err != nil || bc.buf != nil || bc.full {
		t.Fatalf("read-ahead with nothing waiting: err %v, buffer held %v, full %v", err, bc.buf != nil, bc.full)
	}
	done := make(chan []byte)
	go func() {
		b := make([]byte, 100)
		n, _ := bc.Read(b)
		done <- b[:n]
	}()
	server.Write([]byte("later"))
	if got := <-done; string(got) != "later" {
		t.Fatalf("read %q after waiting", got)
	}
}

// TestBurstConnErrors: a read-ahead on a closed connection reports what
// a plain read reports, and the end of the stream is io.EOF.
func TestBurstConnErrors(t *testing.T) {
	client, server := tcpPair(t)
	bc := newBurstConn(client).(*burstConn)
	server.Write([]byte("x"))
	server.Close()
	b := make([]byte, 1)
	if n, err := bc.Read(b); n != 1 || err != nil || !bc.full {
		t.Fatalf("read %d, %v, full %v", n, err, bc.full)
	}
	if n, err := bc.Read(b); n != 0 || err != io.EOF {
		t.Fatalf("at the end: %d, %v", n, err)
	}
	bc.full = true
	client.Close()
	_, err := bc.Read(b)
	if !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read-ahead on a closed connection: %v", err)
	}
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "read" {
		t.Fatalf("not a read OpError: %#v", err)
	}
}

// TestBurstConnNotASocket: a connection without a descriptor is used as
// it is.
func TestBurstConnNotASocket(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if c := newBurstConn(a); c != a {
		t.Fatalf("net.Pipe wrapped: %T", c)
	}
}

// TestBurstConnIntegrity: bytes written in writes of random sizes and
// read in reads of random sizes arrive whole and in order.
func TestBurstConnIntegrity(t *testing.T) {
	client, server := tcpPair(t)
	rng := rand.New(rand.NewPCG(1, 2))
	want := make([]byte, 512<<10)
	for i := range want {
		want[i] = byte(rng.Uint32())
	}
	go func() {
		w := rand.New(rand.NewPCG(3, 4))
		for rest := want; len(rest) > 0; {
			n := min(len(rest), 1+w.IntN(3000))
			if _, err := server.Write(rest[:n]); err != nil {
				return
			}
			rest = rest[n:]
		}
		server.CloseWrite()
	}()
	bc := newBurstConn(client)
	var got []byte
	r := rand.New(rand.NewPCG(5, 6))
	for {
		p := make([]byte, 1+r.IntN(2<<10))
		n, err := bc.Read(p)
		got = append(got, p[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, not the %d written", len(got), len(want))
	}
}
