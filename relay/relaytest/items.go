package relaytest

import (
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"
)

// Input items as the API lists them back: every item with an id, messages
// in their long form.

// isBackground reports whether a create body asks for background mode;
// the body is validated later.
func isBackground(r *http.Request, body []byte) bool {
	if len(body) > maxBody {
		return false
	}
	body, e := decodeBody(r.Header.Get("Content-Encoding"), body)
	return e == nil && gjson.GetBytes(body, "background").Type == gjson.True
}

// itemPrefix is the id prefix the fake gives an input item of type typ.
func itemPrefix(typ string) string {
	switch typ {
	case "message":
		return "msg_"
	case "function_call":
		return "fc_"
	case "function_call_output":
		return "fco_"
	case "reasoning":
		return "rs_"
	case "compaction":
		return "cmp_"
	}
	return "item_"
}

// appendMessage appends a message item in its long form, content as an
// array of parts, with id unless it is "".
func appendMessage(b []byte, id, role string, content gjson.Result) []byte {
	b = append(b, '{')
	if id != "" {
		b = append(b, `"id":`...)
		b = appendString(b, id)
		b = append(b, ',')
	}
	b = append(b, `"type":"message","role":`...)
	b = appendString(b, role)
	b = append(b, `,"content":`...)
	if content.IsArray() {
		return append(append(b, compactJSON(content.Raw)...), '}')
	}
	part := "input_text"
	if role == "assistant" {
		part = "output_text"
	}
	b = append(b, `[{"type":"`...)
	b = append(b, part...)
	b = append(b, `","text":`...)
	b = appendString(b, content.String())
	return append(b, `}]}`...)
}

// listItems returns the items of a raw input value, each with an id:
// those it had, else a fresh one. A string is one user message.
func listItems(raw string) []string {
	v := gjson.Parse(raw)
	if v.Type == gjson.String {
		return []string{string(appendMessage(nil, newID("msg_", 32), "user", v))}
	}
	var out []string
	v.ForEach(func(_, it gjson.Result) bool {
		if !it.IsObject() {
			return true
		}
		typ := it.Get("type").String()
		role := it.Get("role")
		if typ == "" && role.Exists() {
			typ = "message"
		}
		id := it.Get("id").String()
		if id == "" {
			id = newID(itemPrefix(typ), 32)
		}
		if typ == "message" {
			out = append(out, string(appendMessage(nil, id, role.String(), it.Get("content"))))
			return true
		}
		body := strings.TrimSpace(compactJSON(it.Raw)[1:])
		if !it.Get("id").Exists() {
			sep := ","
			if strings.HasPrefix(body, "}") {
				sep = ""
			}
			body = `"id":` + string(appendString(nil, id)) + sep + body
		}
		out = append(out, "{"+body)
		return true
	})
	return out
}

// userMessages appends the user messages of a raw input value, without
// ids, as a compaction keeps them.
func userMessages(out []string, raw string) []string {
	v := gjson.Parse(raw)
	if v.Type == gjson.String {
		return append(out, string(appendMessage(nil, "", "user", v)))
	}
	v.ForEach(func(_, it gjson.Result) bool {
		typ := it.Get("type").String()
		if (typ == "message" || typ == "") && it.Get("role").String() == "user" {
			out = append(out, string(appendMessage(nil, "", "user", it.Get("content"))))
		}
		return true
	})
	return out
}

// inputItems answers GET /responses/{id}/input_items.
func (x *exchange) inputItems(id string) {
	st := x.lookup(id)
	if st == nil {
		x.writeError(notFound(id))
		return
	}
	q := x.r.URL.Query()
	limit := 20
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			x.writeError(&apiError{status: http.StatusBadRequest, typ: typeInvalidRequest, param: "limit",
				code: "integer_out_of_range", msg: "Invalid 'limit': expected an integer between 1 and 100."})
			return
		}
		limit = n
	}
	order := q.Get("order")
	switch order {
	case "":
		order = "desc"
	case "asc", "desc":
	default:
		x.writeError(&apiError{status: http.StatusBadRequest, typ: typeInvalidRequest, param: "order",
			code: "invalid_value", msg: "Invalid value for 'order': expected one of 'asc' or 'desc'."})
		return
	}
	x.u.mu.Lock()
	if st.items == nil {
		st.items = listItems(st.t.req.input)
	}
	items := st.items
	x.u.mu.Unlock()
	ids := make([]string, len(items))
	for i, it := range items {
		ids[i] = gjson.Get(it, "id").String()
	}
	idx := make([]int, len(items))
	for i := range idx {
		idx[i] = i
	}
	if order == "desc" {
		slices.Reverse(idx)
	}
	if after := q.Get("after"); after != "" {
		at := slices.IndexFunc(idx, func(i int) bool { return ids[i] == after })
		if at < 0 {
			x.writeError(&apiError{status: http.StatusBadRequest, typ: typeInvalidRequest, param: "after",
				msg: "Item with id '" + after + "' not found."})
			return
		}
		idx = idx[at+1:]
	}
	more := len(idx) > limit
	idx = idx[:min(limit, len(idx))]
	b := append(make([]byte, 0, 256), `{"object":"list","data":[`...)
	for k, i := range idx {
		if k > 0 {
			b = append(b, ',')
		}
		b = append(b, items[i]...)
	}
	b = append(b, `],"first_id":`...)
	first, last := "", ""
	if len(idx) > 0 {
		first, last = ids[idx[0]], ids[idx[len(idx)-1]]
	}
	b = appendStringOrNull(b, first)
	b = append(b, `,"last_id":`...)
	b = appendStringOrNull(b, last)
	b = append(b, `,"has_more":`...)
	b = strconv.AppendBool(b, more)
	x.writeJSON(append(b, "}\n"...), statusCompleted)
}
