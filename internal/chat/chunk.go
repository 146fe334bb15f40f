package chat

import (
	"math"
	"strconv"

	"github.com/relaykit/responsesrelay/internal/jsonx"
)

// A stream chunk is read in one validating pass (jsonx.Scanner) that keeps
// the few members the translation needs, as slices of the payload, and
// skips the rest; nothing is applied until the whole chunk turned out to
// be valid JSON. A member that appears twice counts by its last
// occurrence (the first non-null error excepted), as encoding/json would
// have it.

// text is a string member as the upstream wrote it: its content between
// the quotes, escapes not decoded.
type text struct {
	raw   []byte
	flags jsonx.StringFlags
	ok    bool // the member is a string
}

// chunkInfo is what one Chat Completions chunk says.
type chunkInfo struct {
	choice bool // choices[0] is an object
	other  bool // its index is not 0: it is ignored
	// choices[0].delta's members
	reasoning, reasoningAlt, content, refusal text
	calls                                     []byte // the tool_calls array; nil when absent or not an array
	finish                                    text
	usage                                     []byte // the usage object; nil when absent or not an object
	err                                       []byte // the first error member that is not null
}

// maxPrefix bounds the leading members a stream remembers (see read).
const maxPrefix = 1 << 10

// read scans payload p into c; it reports false when p is not one valid
// JSON object nested at most jsonx.MaxDepth deep.
//
// The chunks of a stream begin with the same members, byte for byte (id,
// object, created, model, system_fingerprint), none of which the
// translation reads. The stream keeps those bytes of the last valid chunk,
// up to the first member it reads, and a chunk that begins with them and
// a comma is scanned from there: the same bytes were found valid before,
// and the comma ends the last of their values whatever it was.
func (s *Stream) read(p []byte, c *chunkInfo) bool {
	sc := &s.scan
	resumed := false
	if n := len(s.prefix); n > 0 && len(p) > n && p[n] == ',' && string(p[:n]) == string(s.prefix) {
		sc.ResumeObject(p, jsonx.MaxDepth, n)
		resumed = true
	} else {
		sc.Reset(p, jsonx.MaxDepth)
		if !sc.BeginObject() {
			return false
		}
	}
	mark, skipped := -1, 0 // where the first member read begins; members before it
	for {
		at := sc.Offset()
		if !sc.NextMember() {
			break
		}
		key := s.key()
		switch key {
		case "choices", "usage", "error":
			if mark < 0 {
				mark = at
			}
		default:
			skipped++
		}
		switch key {
		case "choices":
			*c = chunkInfo{usage: c.usage, err: c.err}
			s.readChoices(c)
		case "usage":
			c.usage = s.rawOf('{')
		case "error":
			if e := s.rawOf(0); c.err == nil && string(e) != "null" {
				c.err = e
			}
		default:
			sc.Skip()
		}
	}
	if !sc.End() {
		return false
	}
	if !resumed {
		s.prefix = s.prefix[:0]
		if mark > 0 && mark <= maxPrefix && skipped > 0 {
			s.prefix = append(s.prefix, p[:mark]...)
		}
	}
	return true
}

// choicesHead is how nearly every chunk's choices begin: choice 0, its
// delta first. Matched as a whole, it spares reading six tokens.
const choicesHead = `[{"index":0,"delta":{`

func (s *Stream) readChoices(c *chunkInfo) {
	sc := &s.scan
	sc.Peek()
	if sc.Enter(choicesHead, 3) {
		c.choice = true
		s.readDeltaMembers(c)
		s.readChoiceMembers(c)
		s.skipElements()
		return
	}
	if !sc.BeginArray() {
		sc.Skip()
		return
	}
	if !sc.NextElement() {
		return
	}
	if sc.Peek() == '{' {
		c.choice = true
		sc.BeginObject()
		s.readChoiceMembers(c)
	} else {
		sc.Skip()
	}
	s.skipElements()
}

// readChoiceMembers reads the members of choice 0 up to its end.
func (s *Stream) readChoiceMembers(c *chunkInfo) {
	sc := &s.scan
	for sc.NextMember() {
		key := s.key()
		switch key {
		case "delta":
			c.reasoning, c.reasoningAlt, c.content, c.refusal, c.calls = text{}, text{}, text{}, text{}, nil
			if !sc.BeginObject() {
				sc.Skip()
				continue
			}
			s.readDeltaMembers(c)
		case "finish_reason":
			c.finish = s.text()
		case "index":
			c.other = s.intValue() != 0
		default:
			sc.Skip()
		}
	}
}

// skipElements reads the rest of an array.
func (s *Stream) skipElements() {
	for s.scan.NextElement() {
		s.scan.Skip()
	}
}

// readDeltaMembers reads the members of choice 0's delta up to its end.
func (s *Stream) readDeltaMembers(c *chunkInfo) {
	sc := &s.scan
	for sc.NextMember() {
		key := s.key()
		switch key {
		case "reasoning_content":
			c.reasoning = s.text()
		case "reasoning":
			c.reasoningAlt = s.text()
		case "content":
			c.content = s.text()
		case "refusal":
			c.refusal = s.text()
		case "tool_calls":
			// Kept whole and read once the chunk is known valid: recording
			// each call here would take memory in proportion to the chunk.
			c.calls = s.rawOf('[')
		default:
			sc.Skip()
		}
	}
}

// key reads a member's key (and its colon), decoded when it holds an
// escape. The string is valid until the next key.
func (s *Stream) key() string {
	raw, f := s.scan.Key()
	if f&jsonx.Escaped == 0 {
		return bytesToString(raw)
	}
	s.keyBuf = jsonx.AppendUnescaped(s.keyBuf[:0], raw)
	return bytesToString(s.keyBuf)
}

// text reads a value that counts only as a string.
func (s *Stream) text() text {
	if s.scan.Peek() != '"' {
		s.scan.Skip()
		return text{}
	}
	raw, f := s.scan.String()
	return text{raw: raw, flags: f, ok: true}
}

// rawOf reads a value and returns its bytes, or nil when it does not start
// with open (0: any value).
func (s *Stream) rawOf(open byte) []byte {
	sc := &s.scan
	c := sc.Peek()
	start := sc.Offset()
	sc.Skip()
	if open != 0 && c != open || sc.Err {
		return nil
	}
	return sc.Since(start)
}

// intValue reads a value as gjson's Int reads it (a number truncated, a
// numeric string, true as 1, anything else 0), for a choice's index.
func (s *Stream) intValue() int64 {
	sc := &s.scan
	var v float64
	switch c := sc.Peek(); {
	case c == '"':
		raw, f := sc.String()
		if f&jsonx.Escaped != 0 {
			return 0 // no number is written with escapes
		}
		v, _ = strconv.ParseFloat(bytesToString(raw), 64)
	case c == '-' || '0' <= c && c <= '9':
		v = number(sc.Number())
	case c == 't':
		sc.Skip()
		return 1
	default:
		sc.Skip()
		return 0
	}
	if math.IsNaN(v) || math.Abs(v) >= 1<<62 {
		return math.MaxInt64
	}
	return int64(v)
}

// number is a number token's value (±Inf past float64).
func number(raw []byte) float64 {
	if n := len(raw); n > 0 && n <= 9 {
		v := 0
		for _, c := range raw {
			if c < '0' || c > '9' {
				goto general
			}
			v = v*10 + int(c-'0')
		}
		return float64(v)
	}
general:
	f, _ := strconv.ParseFloat(bytesToString(raw), 64)
	return f
}

// decoded is t's value, aliasing the payload when it has no escape, else
// decoded into the stream's scratch buffer (valid until the next Push).
func (s *Stream) decoded(t text) string {
	if t.flags&jsonx.Escaped == 0 {
		return bytesToString(t.raw)
	}
	start := len(s.scratch)
	s.scratch = jsonx.AppendUnescaped(s.scratch, t.raw)
	return bytesToString(s.scratch[start:])
}
