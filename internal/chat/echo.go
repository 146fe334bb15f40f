package chat

import "github.com/tidwall/gjson"

// echoed are the request settings a Responses object repeats, with the
// value the API reports when the request leaves one out.
var echoed = []struct{ name, def string }{
	{"background", "false"},
	{"instructions", "null"},
	{"max_output_tokens", "null"},
	{"metadata", "{}"},
	{"parallel_tool_calls", "true"},
	{"previous_response_id", "null"},
	{"reasoning", `{"effort":null,"summary":null}`},
	{"store", "true"},
	{"temperature", "1.0"},
	{"text", `{"format":{"type":"text"}}`},
	{"tool_choice", `"auto"`},
	{"tools", "[]"},
	{"top_p", "1.0"},
	{"truncation", `"disabled"`},
	{"user", "null"},
}

// Echo is the request echoes of a Responses request body, for Stream.Echo
// and Response: each setting the response object repeats, as the client
// sent it or at the API's default, as members with a leading comma. The
// body has been validated; its values are copied as they stand.
func Echo(body []byte) []byte {
	names := make([]string, len(echoed))
	for i, e := range echoed {
		names[i] = e.name
	}
	vals := gjson.GetManyBytes(body, names...)
	n := 0
	for i, e := range echoed {
		n += len(e.name) + 4 + max(len(vals[i].Raw), len(e.def))
	}
	b := make([]byte, 0, n)
	for i, e := range echoed {
		b = append(b, `,"`...)
		b = append(b, e.name...)
		b = append(b, `":`...)
		if v := vals[i]; v.Exists() {
			b = append(b, v.Raw...)
		} else {
			b = append(b, e.def...)
		}
	}
	return b
}
