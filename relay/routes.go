package relay

import (
	"net/http"
	"slices"
	"strings"
)

// The routes a Handler serves, found by the last segments of the path so
// that any prefix works (a Go 1.22 pattern or a plain prefix):
//
//	POST   …/responses                  a turn (and GET: the WebSocket mode)
//	GET    …/responses/{id}             retrieve (?stream=true: SSE)
//	DELETE …/responses/{id}             delete
//	GET    …/responses/{id}/input_items the input items
//	POST   …/responses/{id}/cancel      cancel a background response
//	POST   …/responses/input_tokens     count a request's input tokens
//	POST   …/responses/compact          compaction (v1)
//	GET    …/models, …/models/{model}   the models the caller can reach
type routeKind int

const (
	routeNone routeKind = iota
	routeCreate
	routeResponse
	routeInputItems
	routeCancel
	routeInputTokens
	routeCompact
	routeModels
	routeModel
)

type route struct {
	kind routeKind
	id   string // a response id or a model name
}

// routeOf finds the route of a path. A path the relay does not serve is
// routeNone. /models/{model} keeps any slashes of the model's name.
func routeOf(path string) route {
	if i := segment(path, "/responses"); i >= 0 {
		rest := strings.Trim(path[i+len("/responses"):], "/")
		switch {
		case rest == "":
			return route{kind: routeCreate}
		case rest == "input_tokens":
			return route{kind: routeInputTokens}
		case rest == "compact":
			return route{kind: routeCompact}
		}
		id, sub, _ := strings.Cut(rest, "/")
		switch sub {
		case "":
			return route{kind: routeResponse, id: id}
		case "input_items":
			return route{kind: routeInputItems, id: id}
		case "cancel":
			return route{kind: routeCancel, id: id}
		}
		return route{}
	}
	if i := segment(path, "/models"); i >= 0 {
		rest := strings.Trim(path[i+len("/models"):], "/")
		if rest == "" {
			return route{kind: routeModels}
		}
		return route{kind: routeModel, id: rest}
	}
	return route{}
}

// segment is the index of the first whole path segment seg ("/responses")
// in path, or -1.
func segment(path, seg string) int {
	for off := 0; ; {
		i := strings.Index(path[off:], seg)
		if i < 0 {
			return -1
		}
		i += off
		if end := i + len(seg); end == len(path) || path[end] == '/' {
			return i
		}
		off = i + len(seg)
	}
}

// allowed lists the methods of each route but a turn's.
var allowed = [...]string{
	routeResponse:    "GET, DELETE",
	routeInputItems:  "GET",
	routeCancel:      "POST",
	routeInputTokens: "POST",
	routeCompact:     "POST",
	routeModels:      "GET",
	routeModel:       "GET",
}

// serveRoute serves every route but a turn.
func (h *Handler) serveRoute(w http.ResponseWriter, r *http.Request, rt route) {
	if rt.kind == routeNone {
		writeJSONError(w, &APIError{Status: http.StatusNotFound, Type: "invalid_request_error",
			Message: "Invalid URL (" + r.Method + " " + r.URL.Path + ")"})
		return
	}
	allow := allowed[rt.kind]
	if !slices.Contains(strings.Split(allow, ", "), r.Method) {
		w.Header().Set("Allow", allow)
		writeJSONError(w, &APIError{Status: http.StatusMethodNotAllowed, Type: "invalid_request_error", Message: "Method not allowed: use " + allow})
		return
	}
	h.active.add()
	defer h.active.done()
	switch rt.kind {
	case routeResponse, routeInputItems, routeCancel:
		h.serveStored(w, r, rt)
	case routeInputTokens:
		h.serveInputTokens(w, r)
	case routeCompact:
		h.serveCreate(w, r, true)
	case routeModels, routeModel:
		h.serveModels(w, r, rt)
	}
}
