package relay

import "bytes"

// itemKinds says which item types a request's input may carry, from one
// scan of the input for "type" keys, so that each stage that acts on one
// kind (tool outputs, reasoning, compaction) skips the walk over the items
// when there is none. It is a hint: a type spelled with JSON escapes is
// not seen, and the relay then acts as if the item were not there (the
// upstream still judges it).
type itemKinds struct {
	toolOutput bool // function_call_output: checked against its call
	reasoning  bool // may carry encrypted content another account made
	compaction bool // binds the turn to the account that made it
	trigger    bool // compaction_trigger: the answer's item is kept from the stream
}

var typeKey = []byte(`"type"`)

// scanItemKinds finds the item types of an input array.
func scanItemKinds(input []byte) itemKinds {
	var k itemKinds
	for off := 0; off < len(input); {
		i := bytes.Index(input[off:], typeKey)
		if i < 0 {
			break
		}
		j := off + i + len(typeKey)
		for j < len(input) && (isSpace(input[j]) || input[j] == ':') {
			j++
		}
		if j < len(input) && input[j] == '"' {
			v := input[j+1:]
			switch {
			case bytes.HasPrefix(v, []byte(`function_call_output"`)):
				k.toolOutput = true
			case bytes.HasPrefix(v, []byte(`reasoning"`)):
				k.reasoning = true
			case bytes.HasPrefix(v, []byte(`compaction"`)):
				k.compaction = true
			case bytes.HasPrefix(v, []byte(`compaction_trigger"`)):
				k.trigger = true
			}
		}
		off = j
	}
	return k
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }
