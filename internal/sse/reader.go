// Package sse reads and writes the Server-Sent Events framing the Responses
// API uses: "event: <type>\ndata: <json>\n\n".
//
// The reader accepts what real upstreams send: LF or CRLF line endings,
// several data lines per event (joined with "\n"), comment lines and unknown
// fields (ignored), and events of any size up to a cap, so a large
// response.output_item.done never trips a fixed line limit.
package sse

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// DefaultMaxEventBytes caps one event's data when Reader.MaxEventBytes is 0.
const DefaultMaxEventBytes = 32 << 20

// ErrEventTooLarge is returned when an event's data exceeds the cap.
var ErrEventTooLarge = errors.New("sse: event too large")

// Event is one parsed event. Its slices alias the Reader's buffers and are
// valid only until the next call to Next.
type Event struct {
	Type []byte // the "event:" field; empty when absent
	Data []byte // the "data:" lines joined with "\n"
}

// Reader parses events from an SSE stream.
type Reader struct {
	// MaxEventBytes caps one event's data; 0 means DefaultMaxEventBytes.
	MaxEventBytes int

	br   *buffer
	line []byte // a line longer than the bufio buffer is assembled here
	typ  []byte
	data []byte
}

// NewReader returns a Reader over r with a 32 KiB buffer.
func NewReader(r io.Reader) *Reader {
	return NewReaderSize(r, 32<<10)
}

// NewReaderSize returns a Reader over r with a read buffer of size bytes.
// Lines longer than the buffer are still read whole. While the source has
// more to give than the buffer holds, the Reader borrows a 32 KiB buffer
// from a shared pool, and gives it back once it has caught up.
func NewReaderSize(r io.Reader, size int) *Reader {
	return &Reader{br: newBuffer(r, size)}
}

// Pending reports whether Next would return an event without reading from
// the source: the buffer holds a blank-line-terminated event with a data
// field. It may say false when an event is buffered in a rarer shape (a
// comment before it); a caller uses it only to defer a flush.
func (r *Reader) Pending() bool {
	b := r.br.buffered()
	if len(b) == 0 {
		return false
	}
	end := bytes.Index(b, lfLF)
	// A CRLF blank line that comes first ends within three bytes of the
	// LF one: the search for it stops there, not at the buffer's end.
	crlfIn := b
	if end >= 0 {
		crlfIn = b[:min(len(b), end+3)]
	}
	if crlf := bytes.Index(crlfIn, crlfCRLF); crlf >= 0 && (end < 0 || crlf < end) {
		end = crlf
	}
	if end < 0 {
		return false
	}
	ev := b[:end]
	return bytes.HasPrefix(ev, dataField) || bytes.Contains(ev, nlDataField)
}

var (
	lfLF        = []byte("\n\n")
	crlfCRLF    = []byte("\r\n\r\n")
	dataField   = []byte("data:")
	nlDataField = []byte("\ndata:")
)

// BufferedCap is the capacity of the buffers that hold an event, which
// grow to the largest event read: for a caller that recycles Readers.
func (r *Reader) BufferedCap() int {
	return cap(r.line) + cap(r.typ) + cap(r.data)
}

// Reset makes the Reader read from r, keeping its buffers.
func (r *Reader) Reset(src io.Reader) {
	r.br.reset(src)
	r.typ, r.data, r.line = r.typ[:0], r.data[:0], r.line[:0]
}

// Next returns the next event that carries data. Events with no data lines
// (a lone comment, a stray blank line) are skipped. At a clean end of stream
// it returns io.EOF. An event whose data lines are whole but which lacks the
// final blank line is delivered; a line cut off by the end of the stream is
// io.ErrUnexpectedEOF, since a partial JSON payload must not be forwarded.
func (r *Reader) Next() (Event, error) {
	limit := r.MaxEventBytes
	if limit <= 0 {
		limit = DefaultMaxEventBytes
	}
	r.typ, r.data = r.typ[:0], r.data[:0]
	r.Wait()
	hasData := false
	pending := false // some field of the current event was seen
	for {
		line, err := r.readLine(limit)
		if err != nil {
			if err == io.EOF && hasData {
				// The stream ended after whole data lines but before the
				// blank line: the payload is complete, so deliver it.
				return Event{Type: r.typ, Data: r.data}, nil
			}
			if err == io.EOF && pending {
				return Event{}, io.ErrUnexpectedEOF
			}
			return Event{}, err
		}
		if len(line) == 0 { // blank line: dispatch
			if hasData {
				return Event{Type: r.typ, Data: r.data}, nil
			}
			r.typ = r.typ[:0]
			pending = false
			continue
		}
		if line[0] == ':' { // comment
			continue
		}
		field, value := line, []byte(nil)
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			field, value = line[:i], line[i+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
		}
		switch string(field) {
		case "event":
			r.typ = append(r.typ[:0], value...)
			pending = true
		case "data":
			if !hasData && r.br.blankNext() {
				// One data line and its blank line already buffered (how
				// upstreams write): the data is returned where it lies,
				// valid until the next read as the Event promises.
				if len(value) > limit {
					return Event{}, fmt.Errorf("%w: over %d bytes", ErrEventTooLarge, limit)
				}
				return Event{Type: r.typ, Data: value}, nil
			}
			if hasData {
				r.data = append(r.data, '\n')
			}
			if len(r.data)+len(value) > limit {
				return Event{}, fmt.Errorf("%w: over %d bytes", ErrEventTooLarge, limit)
			}
			r.data = append(r.data, value...)
			hasData, pending = true, true
		}
	}
}

// Wait returns at once when bytes are buffered; otherwise it reads once
// from the source, waiting for it, and keeps a read error for Next. Next
// waits by itself: a caller that waits first, from a shallow frame, keeps
// its goroutine's stack small while the source is silent (a goroutine
// parked deep in Next holds the frames of Next and its line reading), and
// the Reader drops its large event scratch before the wait.
func (r *Reader) Wait() {
	if b := r.br; b.r == b.w && b.err == nil {
		r.dropScratch()
		b.fill()
	}
}

// maxScratch is the largest event scratch (r.line, r.data) a Reader keeps
// while it waits for the source: an idle stream that once read a large
// event does not hold its size.
const maxScratch = 4 << 10

func (r *Reader) dropScratch() {
	if cap(r.line) > maxScratch {
		r.line = nil
	}
	if cap(r.data) > maxScratch {
		r.data = nil
	}
}

// readLine returns one line without its LF or CRLF. The slice is valid until
// the next read.
func (r *Reader) readLine(limit int) ([]byte, error) {
	line, err := r.br.readSlice('\n')
	if err == bufio.ErrBufferFull {
		r.line = append(r.line[:0], line...)
		for err == bufio.ErrBufferFull {
			if len(r.line) > limit+64 {
				return nil, fmt.Errorf("%w: line over %d bytes", ErrEventTooLarge, limit)
			}
			line, err = r.br.readSlice('\n')
			r.line = append(r.line, line...)
		}
		line = r.line
	}
	if err != nil {
		if err == io.EOF && len(line) > 0 {
			// A final line with no newline may be cut short: never use it.
			return nil, io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return trimEOL(line), nil
}

func trimEOL(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
	}
	if n := len(b); n > 0 && b[n-1] == '\r' {
		b = b[:n-1]
	}
	return b
}
