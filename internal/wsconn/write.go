package wsconn

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"time"
)

// writeChunk is how much of a payload is masked and written per write
// call, so that a large message needs no buffer of its size.
const writeChunk = 32 << 10

// keptWriteBuf is the largest write buffer kept between writes.
const keptWriteBuf = 4 << 10

// WriteText sends p as one text message. ctx bounds the write: when it
// ends first, the connection is closed.
func (c *Conn) WriteText(ctx context.Context, p []byte) error {
	return c.writeFrameCtx(ctx, opText, p)
}

// writeFrameCtx is writeFrame bounded by ctx: when ctx ends first, the
// connection is closed, which ends a write blocked on a peer that does
// not read (and a frame cut short cannot be resumed anyway).
func (c *Conn) writeFrameCtx(ctx context.Context, op byte, p []byte) error {
	if err := ctx.Err(); err != nil {
		return err // nothing written: the connection stays usable
	}
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, func() { c.CloseNow() })
		defer stop()
	}
	err := c.writeFrame(op, p)
	if ctxErr := ctx.Err(); ctxErr != nil {
		// ctx ended during the write: the connection is closed (or about
		// to be), even if the write itself got through.
		c.CloseNow()
		return ctxErr
	}
	return err
}

// Ping sends a ping and waits for a pong, which a concurrent (or later)
// Read receives. It returns ctx's error when ctx ends first; when that
// happens while the ping is being written, the connection is closed.
func (c *Conn) Ping(ctx context.Context) error {
	select {
	case <-c.pong: // one left from an earlier ping
	default:
	}
	// Bounded by ctx too: a peer that does not read would otherwise
	// hold Ping in its write past ctx.
	if err := c.writeFrameCtx(ctx, opPing, nil); err != nil {
		return err
	}
	select {
	case <-c.pong:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.closed:
		return ErrClosed
	}
}

// writeClose sends a close frame with code, best effort: it gives up
// after a second (a peer that does not read) and when another write holds
// the connection.
func (c *Conn) writeClose(code int) {
	if !c.wmu.TryLock() {
		return
	}
	defer c.wmu.Unlock()
	if c.closing.Swap(true) {
		return
	}
	t := time.AfterFunc(time.Second, func() { c.CloseNow() })
	defer t.Stop()
	var p [2]byte
	binary.BigEndian.PutUint16(p[:], uint16(code))
	c.writeLocked(opClose, p[:])
}

// writeFrame sends one final frame with op and payload p, masked as a
// client must.
func (c *Conn) writeFrame(op byte, p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closing.Load() {
		return ErrClosed
	}
	return c.writeLocked(op, p)
}

func (c *Conn) writeLocked(op byte, p []byte) error {
	select {
	case <-c.closed:
		return ErrClosed
	default:
	}
	if c.wbuf == nil {
		c.wbuf = make([]byte, 0, 14+min(len(p), writeChunk))
	}
	b := c.wbuf[:0]
	b = append(b, 0x80|op)
	switch n := len(p); {
	case n <= 125:
		b = append(b, 0x80|byte(n))
	case n <= 0xFFFF:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	key := c.maskKey()
	b = append(b, key[:]...)
	pos := 0
	for {
		n := min(len(p), writeChunk)
		start := len(b)
		b = append(b, p[:n]...)
		pos = mask(key, pos, b[start:])
		p = p[n:]
		if _, err := c.rwc.Write(b); err != nil {
			c.wbuf = b[:0]
			c.CloseNow()
			return err
		}
		b = b[:0]
		if len(p) == 0 {
			break
		}
	}
	if cap(b) > keptWriteBuf {
		b = nil // an idle connection keeps a small buffer only
	}
	c.wbuf = b
	return nil
}

// maskKey returns the next frame's masking key. Keys must be unpredictable
// (RFC 6455 10.3: a script that can guess them can shape the bytes on the
// wire for a proxy in between), so they come from crypto/rand, read a
// buffer at a time to keep the system call off the per-frame path. The
// caller holds wmu.
func (c *Conn) maskKey() [4]byte {
	if c.maskPos+4 > len(c.maskBuf) {
		rand.Read(c.maskBuf[:]) // never fails (crypto/rand panics instead)
		c.maskPos = 0
	}
	var k [4]byte
	copy(k[:], c.maskBuf[c.maskPos:])
	c.maskPos += 4
	return k
}

// mask XORs b with key, b starting at payload offset pos; it returns the
// offset after b.
func mask(key [4]byte, pos int, b []byte) int {
	k := [4]byte{key[pos&3], key[(pos+1)&3], key[(pos+2)&3], key[(pos+3)&3]}
	k32 := uint64(binary.LittleEndian.Uint32(k[:]))
	k64 := k32<<32 | k32
	n := len(b)
	for len(b) >= 8 {
		binary.LittleEndian.PutUint64(b, binary.LittleEndian.Uint64(b)^k64)
		b = b[8:]
	}
	for i := range b {
		b[i] ^= k[i&3]
	}
	return pos + n
}
