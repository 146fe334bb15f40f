package relaytest

import (
	"net/http"
	"strconv"
	"strings"
)

// The routes of the API besides the create: retrieve, delete, cancel and
// list the input items of a stored response, count input tokens, compact,
// list models, and Chat Completions (chat.go). Paths are given after the "/v1" of an account's base URL.

const (
	pathResponses   = "/responses"
	pathModels      = "/models"
	pathInputTokens = "/responses/input_tokens"
	pathCompact     = "/responses/compact"
)

// route splits a path into the account it names and the rest after "/v1",
// and reports whether the rest is a route of the fake. "/{account}/v1/..."
// is tried first, so an account may be named "v1".
func route(path string) (name, rest string, ok bool) {
	if i := strings.IndexByte(path[min(1, len(path)):], '/') + 1; i > 1 && path[0] == '/' {
		if r := path[i:]; strings.HasPrefix(r, "/v1/") && known(r[3:]) {
			return path[1:i], r[3:], true
		}
	}
	if strings.HasPrefix(path, "/v1/") && known(path[3:]) {
		return "", path[3:], true
	}
	return "", "", false
}

// known reports whether rest is one of the fake's routes.
func known(rest string) bool {
	switch rest {
	case pathResponses, pathModels, pathInputTokens, pathCompact, pathChat:
		return true
	}
	if id, ok := strings.CutPrefix(rest, pathModels+"/"); ok {
		return id != ""
	}
	id, ok := strings.CutPrefix(rest, pathResponses+"/")
	if !ok {
		return false
	}
	id, sub, _ := strings.Cut(id, "/")
	return id != "" && (sub == "" && !strings.HasSuffix(rest, "/") || sub == "cancel" || sub == "input_items")
}

// serveRoute answers an authenticated request to a route other than the
// create.
func (x *exchange) serveRoute(rest string, body []byte) {
	m := x.r.Method
	switch {
	case rest == pathChat:
		if x.allow(m, http.MethodPost) {
			x.chat(body)
		}
	case rest == pathInputTokens:
		if x.allow(m, http.MethodPost) {
			x.inputTokens(body)
		}
	case rest == pathCompact:
		if x.allow(m, http.MethodPost) {
			x.compact(body)
		}
	case rest == pathModels:
		if x.allow(m, http.MethodGet) {
			x.models()
		}
	case strings.HasPrefix(rest, pathModels+"/"):
		if x.allow(m, http.MethodGet) {
			x.model(rest[len(pathModels)+1:])
		}
	default:
		id, sub, _ := strings.Cut(rest[len(pathResponses)+1:], "/")
		x.served.ResponseID = id
		switch sub {
		case "":
			if x.allow(m, http.MethodGet, http.MethodDelete) {
				if m == http.MethodGet {
					x.retrieve(id)
				} else {
					x.remove(id)
				}
			}
		case "cancel":
			if x.allow(m, http.MethodPost) {
				x.cancel(id)
			}
		default:
			if x.allow(m, http.MethodGet) {
				x.inputItems(id)
			}
		}
	}
}

// allow answers 405 unless m is one of methods.
func (x *exchange) allow(m string, methods ...string) bool {
	for _, ok := range methods {
		if m == ok {
			return true
		}
	}
	x.w.Header().Set("Allow", strings.Join(methods, ", "))
	x.writeError(&apiError{status: http.StatusMethodNotAllowed, typ: typeInvalidRequest,
		msg: "Invalid method for URL (" + m + " " + x.r.URL.Path + ")"})
	return false
}

// writeJSON answers 200 with body, recorded as status.
func (x *exchange) writeJSON(body []byte, status string) {
	x.header(hdrJSON, http.StatusOK)
	x.w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	x.finish(status)
	x.w.WriteHeader(http.StatusOK)
	_, _ = x.w.Write(body)
}

// notFound is the answer for a response id the account does not hold.
func notFound(id string) *apiError {
	return &apiError{status: http.StatusNotFound, typ: typeInvalidRequest,
		msg: "Response with id '" + id + "' not found."}
}

// lookup returns the account's stored response id, or nil.
func (x *exchange) lookup(id string) *stored {
	x.u.mu.Lock()
	defer x.u.mu.Unlock()
	return x.acct.store[id]
}
