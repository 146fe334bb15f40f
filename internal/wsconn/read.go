package wsconn

import (
	"encoding/binary"
	"errors"
	"io"
	"unicode/utf8"
)

// Opcodes (RFC 6455 §5.2).
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xA
)

// SetReadLimit caps the size of one message (n <= 0: DefaultReadLimit;
// at most MaxReadLimit).
func (c *Conn) SetReadLimit(n int64) {
	if n <= 0 {
		n = DefaultReadLimit
	}
	c.readLimit = min(n, MaxReadLimit)
}

// MaxReadLimit bounds SetReadLimit, so that frame sizes within the limit
// cannot overflow the buffer arithmetic.
const MaxReadLimit = 1 << 40

// Read returns the next data message (text or binary), answering pings
// and a close frame on the way. The message is valid until the next Read.
// Only one goroutine may read at a time, but which one may change between
// calls. An error is final: the connection is then closed.
func (c *Conn) Read() ([]byte, error) {
	if c.readErr != nil {
		return nil, c.readErr
	}
	if c.r == c.w {
		c.r, c.w = 0, 0
		if len(c.buf) > maxKeptBuf {
			c.buf = make([]byte, initialBuf) // a huge message is not kept
		}
	}
	if !c.inFrag && cap(c.frag) > maxKeptBuf {
		c.frag = nil
	}
	c.frag = c.frag[:0]
	for {
		h, ok, err := parseHeader(c.buf[c.r:c.w])
		if err != nil {
			return nil, c.fail(err, 1002)
		}
		if !ok {
			if err := c.fill(c.w - c.r + 1); err != nil {
				return nil, c.fail(err, 0)
			}
			continue
		}
		if h.op >= opClose {
			if err := c.fill(h.size + int(h.len)); err != nil {
				return nil, c.fail(err, 0)
			}
			payload := c.buf[c.r+h.size : c.r+h.size+int(h.len)]
			c.r += h.size + int(h.len)
			if err := c.control(h.op, payload); err != nil {
				return nil, err
			}
			continue
		}
		switch {
		case h.op == opContinuation && !c.inFrag:
			return nil, c.fail(&ProtocolError{"continuation frame without a message"}, 1002)
		case h.op != opContinuation && c.inFrag:
			return nil, c.fail(&ProtocolError{"new message inside a fragmented one"}, 1002)
		}
		// Not len(c.frag)+h.len: a length near 1<<63 would wrap the sum
		// around and pass.
		if h.len > c.readLimit-int64(len(c.frag)) {
			return nil, c.fail(ErrTooBig, 1009)
		}
		if h.fin && !c.inFrag {
			// The usual case: the whole message is one frame, returned
			// where it lies in the read buffer.
			total := h.size + int(h.len)
			if err := c.fill(total); err != nil {
				return nil, c.fail(err, 0)
			}
			msg := c.buf[c.r+h.size : c.r+total]
			c.r += total
			return msg, nil
		}
		// A fragment: its payload is copied out as it arrives.
		c.r += h.size
		for left := int(h.len); left > 0; {
			if c.r == c.w {
				if err := c.fill(1); err != nil {
					return nil, c.fail(err, 0)
				}
			}
			n := min(left, c.w-c.r)
			c.frag = append(c.frag, c.buf[c.r:c.r+n]...)
			c.r += n
			left -= n
		}
		c.inFrag = !h.fin
		if h.fin {
			return c.frag, nil
		}
	}
}

// Buffered reports that the next message is already read, whole, so Read
// will return it without waiting. False when unsure.
func (c *Conn) Buffered() bool {
	if c.inFrag || c.readErr != nil {
		return false
	}
	h, ok, err := parseHeader(c.buf[c.r:c.w])
	// A message over the limit is an error for Read, not a message; and
	// h.len is compared alone, since h.size+h.len can wrap around.
	return ok && err == nil && h.fin && h.op < opClose && h.op != opContinuation &&
		h.len <= c.readLimit && h.len <= int64(c.w-c.r-h.size)
}

// control handles a ping, pong or close frame.
func (c *Conn) control(op byte, payload []byte) error {
	switch op {
	case opPing:
		if err := c.writeFrame(opPong, payload); err != nil {
			return c.fail(err, 0)
		}
	case opPong:
		select {
		case c.pong <- struct{}{}:
		default:
		}
	case opClose:
		ce := &CloseError{Code: 1005}
		if len(payload) == 1 {
			return c.fail(&ProtocolError{"close frame with a 1-byte payload"}, 1002)
		}
		if len(payload) >= 2 {
			ce.Code = int(binary.BigEndian.Uint16(payload))
			ce.Reason = string(payload[2:])
			if !utf8.ValidString(ce.Reason) {
				return c.fail(&ProtocolError{"close reason is not UTF-8"}, 1002)
			}
		}
		// Echo the code, then close: the server closes the TCP connection.
		reply := 1000
		switch {
		case ce.Code == 1005:
		case !sendableCode(ce.Code):
			reply = 1002 // a code that may not be sent is a protocol error
		default:
			reply = ce.Code
		}
		c.readErr = ce
		c.writeClose(reply)
		c.CloseNow()
		return ce
	}
	return nil
}

// sendableCode reports whether a close code may appear in a close frame
// (RFC 6455 §7.4).
func sendableCode(code int) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// fail makes err final for Read, sends a close frame with code when it
// is not 0, and closes the connection.
func (c *Conn) fail(err error, code int) error {
	select {
	case <-c.closed:
		err = ErrClosed // closed on our side: what the read saw is a consequence
	default:
	}
	c.readErr = err
	if code != 0 {
		c.writeClose(code)
	}
	c.CloseNow()
	return err
}

// fill reads until at least need bytes are unread in the buffer, growing
// it (up to the read limit, checked by the caller) or moving the unread
// bytes to its start. It invalidates the message Read returned last.
func (c *Conn) fill(need int) error {
	if c.w-c.r >= need {
		return nil
	}
	if need > len(c.buf) {
		nb := make([]byte, max(need, 2*len(c.buf)))
		c.w = copy(nb, c.buf[c.r:c.w])
		c.r, c.buf = 0, nb
	} else if c.r+need > len(c.buf) {
		c.w = copy(c.buf, c.buf[c.r:c.w])
		c.r = 0
	}
	for c.w-c.r < need {
		n, err := c.rwc.Read(c.buf[c.w:])
		c.w += n
		if err != nil {
			if c.w-c.r >= need {
				return nil // the error comes back on the next read
			}
			if errors.Is(err, io.EOF) {
				return ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// header is a parsed frame header.
type header struct {
	fin  bool
	op   byte
	size int   // header bytes
	len  int64 // payload bytes
}

// parseHeader reads a server frame's header from b; ok is false when b
// does not hold all of it yet.
func parseHeader(b []byte) (h header, ok bool, err error) {
	if len(b) < 2 {
		return h, false, nil
	}
	h.fin = b[0]&0x80 != 0
	h.op = b[0] & 0x0F
	if b[0]&0x70 != 0 {
		return h, false, &ProtocolError{"reserved bits set without an extension"}
	}
	if b[1]&0x80 != 0 {
		return h, false, &ProtocolError{"masked frame from the server"}
	}
	switch h.op {
	case opContinuation, opText, opBinary:
	case opClose, opPing, opPong:
		if !h.fin || b[1]&0x7F > 125 {
			return h, false, &ProtocolError{"fragmented or oversized control frame"}
		}
	default:
		return h, false, &ProtocolError{"unknown opcode"}
	}
	switch n := b[1] & 0x7F; n {
	case 126:
		if len(b) < 4 {
			return h, false, nil
		}
		h.size, h.len = 4, int64(binary.BigEndian.Uint16(b[2:]))
	case 127:
		if len(b) < 10 {
			return h, false, nil
		}
		l := binary.BigEndian.Uint64(b[2:])
		if l>>63 != 0 {
			return h, false, &ProtocolError{"payload length with the top bit set"}
		}
		h.size, h.len = 10, int64(l)
	default:
		h.size, h.len = 2, int64(n)
	}
	return h, true, nil
}
