package relaytest

import (
	"net/http"
	"strconv"
)

// retrieve answers GET /responses/{id}: the stored response object in its
// current state, or with ?stream=true its events as SSE after
// starting_after.
func (x *exchange) retrieve(id string) {
	st := x.lookup(id)
	if st == nil {
		x.writeError(notFound(id))
		return
	}
	q := x.r.URL.Query()
	if q.Get("stream") != "true" {
		status, n, _, _ := x.u.state(st)
		x.writeJSON(append(st.appendStored(nil, status, n), '\n'), statusCompleted)
		return
	}
	from := 0
	if v := q.Get("starting_after"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			x.writeError(&apiError{status: http.StatusBadRequest, typ: typeInvalidRequest, param: "starting_after",
				msg: "Invalid 'starting_after': expected an integer greater than or equal to 0."})
			return
		}
		from = n + 1
	}
	x.follow(st, from)
}

// remove answers DELETE /responses/{id}: the response is forgotten, and
// its background job, if running, stops.
func (x *exchange) remove(id string) {
	u := x.u
	u.mu.Lock()
	st := x.acct.store[id]
	if st != nil {
		x.acct.forget(id)
		if st.bg != nil {
			st.bg.endLocked(u, statusCancelled)
		}
	}
	u.mu.Unlock()
	if st == nil {
		x.writeError(notFound(id))
		return
	}
	if st.bg != nil {
		st.bg.stop()
	}
	b := append([]byte(`{"id":`), appendString(nil, id)...)
	x.writeJSON(append(b, `,"object":"response","deleted":true}`+"\n"...), statusCompleted)
}

// cancel answers POST /responses/{id}/cancel: a queued or running
// background response becomes cancelled; a finished one is answered as it
// is.
func (x *exchange) cancel(id string) {
	u := x.u
	st := x.lookup(id)
	if st == nil {
		x.writeError(notFound(id))
		return
	}
	j := st.bg
	if j == nil {
		x.writeError(&apiError{status: http.StatusBadRequest, typ: typeInvalidRequest,
			msg: "Only background responses can be cancelled."})
		return
	}
	u.mu.Lock()
	j.endLocked(u, statusCancelled)
	status, n := j.status, j.n
	u.mu.Unlock()
	j.stop()
	x.writeJSON(append(st.appendStored(nil, status, n), '\n'), statusCompleted)
}
