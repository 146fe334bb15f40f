package relaytest

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// Event is one server-sent event read by ReadSSE.
type Event struct {
	// Type is the value of the event: field; "" when the event had none.
	Type string
	// Data is the event's data: lines joined by "\n".
	Data []byte
}

// ReadSSE reads server-sent events from r until EOF, for tests that check
// what a relay sent. It accepts LF, CRLF and CR line endings, several data:
// lines per event, comment lines and blocks (": ping"), and lines of any
// length. id: and retry: fields are ignored. As in the SSE specification, an
// event is dispatched at a blank line, an event without data: lines is not
// dispatched, and an unfinished event at EOF is dropped.
//
// It returns the events read so far together with any read error other than
// io.EOF (for example io.ErrUnexpectedEOF when the connection was cut).
func ReadSSE(r io.Reader) ([]Event, error) {
	br := bufio.NewReader(r)
	var (
		events  []Event
		typ     string
		data    []byte
		hasData bool
		pendCR  bool // the previous line ended with '\r': skip one '\n'
	)
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A long line: collect it whole.
			long := append([]byte(nil), line...)
			for errors.Is(err, bufio.ErrBufferFull) {
				line, err = br.ReadSlice('\n')
				long = append(long, line...)
			}
			line = long
		}
		if pendCR && len(line) > 0 && line[0] == '\n' {
			line = line[1:]
		}
		pendCR = false
		// A chunk may hold several CR-terminated lines.
		for len(line) > 0 {
			var l []byte
			i := bytes.IndexAny(line, "\r\n")
			if i < 0 {
				if err == nil {
					break
				}
				// The last line has no terminator: it ends the stream.
				line = nil
				break
			}
			l = line[:i]
			if line[i] == '\r' {
				if i+1 < len(line) && line[i+1] == '\n' {
					line = line[i+2:]
				} else if i+1 == len(line) {
					line, pendCR = nil, true
				} else {
					line = line[i+1:]
				}
			} else {
				line = line[i+1:]
			}
			if len(l) == 0 {
				if hasData {
					events = append(events, Event{Type: typ, Data: data})
				}
				typ, data, hasData = "", nil, false
				continue
			}
			if l[0] == ':' {
				continue
			}
			field, value := l, []byte(nil)
			if c := bytes.IndexByte(l, ':'); c >= 0 {
				field, value = l[:c], l[c+1:]
				if len(value) > 0 && value[0] == ' ' {
					value = value[1:]
				}
			}
			switch string(field) {
			case "event":
				typ = string(value)
			case "data":
				if hasData {
					data = append(data, '\n')
				}
				data = append(data, value...)
				hasData = true
			}
		}
		if err != nil {
			if err == io.EOF {
				return events, nil
			}
			return events, err
		}
	}
}
