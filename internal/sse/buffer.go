package sse

import (
	"bufio"
	"bytes"
	"io"
	"sync"
)

// burstSize is the read buffer a stream borrows while its upstream sends
// faster than it is read: one system call then takes many events.
const burstSize = 32 << 10

var burstBufs = sync.Pool{New: func() any { b := make([]byte, burstSize); return &b }}

// buffer is the Reader's read buffer. It reads into a small array of its
// own, and into a large pooled one while reads keep filling the space they
// are given (a burst): a busy stream reads many events per read call, and
// an idle one, blocked in a read, holds only its small array.
type buffer struct {
	src   io.Reader
	small []byte
	big   *[]byte // borrowed from burstBufs; nil when not in use
	buf   []byte  // small or *big
	r, w  int     // buf[r:w] is unread
	err   error
	full  bool // the last read filled all the space it was given
}

func newBuffer(src io.Reader, size int) *buffer {
	b := &buffer{src: src, small: make([]byte, size)}
	b.buf = b.small
	return b
}

// reset reads from src, dropping what is buffered.
func (b *buffer) reset(src io.Reader) {
	b.giveBack()
	b.src, b.buf, b.r, b.w, b.err, b.full = src, b.small, 0, 0, nil, false
}

func (b *buffer) giveBack() {
	if b.big != nil {
		burstBufs.Put(b.big)
		b.big = nil
	}
}

func (b *buffer) buffered() []byte { return b.buf[b.r:b.w] }

// blankNext consumes a blank line (LF or CRLF) that is next in the buffer
// and reports whether there was one; it never reads from src.
func (b *buffer) blankNext() bool {
	p := b.buf[b.r:b.w]
	switch {
	case len(p) > 0 && p[0] == '\n':
		b.r++
	case len(p) > 1 && p[0] == '\r' && p[1] == '\n':
		b.r += 2
	default:
		return false
	}
	return true
}

// readSlice is bufio.Reader.ReadSlice: the bytes up to and including delim,
// valid until the next read; bufio.ErrBufferFull when the buffer is full
// without one.
func (b *buffer) readSlice(delim byte) ([]byte, error) {
	for {
		if i := bytes.IndexByte(b.buf[b.r:b.w], delim); i >= 0 {
			line := b.buf[b.r : b.r+i+1]
			b.r += i + 1
			return line, nil
		}
		if b.err != nil {
			line, err := b.buf[b.r:b.w], b.err
			b.r, b.err = b.w, nil
			return line, err
		}
		if b.w-b.r == len(b.buf) {
			line := b.buf[b.r:b.w]
			b.r = b.w
			return line, bufio.ErrBufferFull
		}
		b.fill()
	}
}

// fill reads once more from src, into the large buffer during a burst.
func (b *buffer) fill() {
	pending := b.w - b.r
	switch {
	case b.full && b.big == nil:
		b.big = burstBufs.Get().(*[]byte)
		b.move(*b.big)
	case !b.full && b.big != nil && pending <= len(b.small):
		// The burst is over: wait for the next one in the small array.
		b.move(b.small)
		b.giveBack()
	case b.r > 0:
		b.move(b.buf)
	}
	for range 100 { // as bufio: a reader that keeps returning nothing is broken
		n, err := b.src.Read(b.buf[b.w:])
		b.full = n == len(b.buf)-b.w
		b.w += n
		if err != nil {
			b.err = err
			return
		}
		if n > 0 {
			return
		}
	}
	b.err = io.ErrNoProgress
}

// move puts the unread bytes at the start of dst and makes it the buffer.
func (b *buffer) move(dst []byte) {
	n := copy(dst, b.buf[b.r:b.w])
	b.buf, b.r, b.w = dst, 0, n
}
