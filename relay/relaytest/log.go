package relaytest

import (
	"context"
	"net/http"
	"slices"
)

// Received is one request as the fake received it, or one message a client
// sent on a WebSocket.
type Received struct {
	// Account is the account named by the path; "" for the unprefixed path
	// and for paths outside the API.
	Account string
	// Method and Path are the request's method and URL path. A WebSocket
	// message has Method "WS" and the path of its connection's upgrade.
	Method, Path string
	// Header is a copy of the request headers; for a WebSocket message, those
	// of its connection's upgrade request (shared by its messages).
	Header http.Header
	// Body is the request body as it arrived: still compressed if the client
	// compressed it, cut after 64 MiB. For a WebSocket message, the message.
	Body []byte
	// Seq numbers requests and WebSocket messages from 1 in arrival order;
	// Served.Seq links an answer to its request. Reset does not restart it.
	Seq int64
}

// Served describes how the fake answered one request. Every request gets
// exactly one, recorded just before the last byte of a complete answer is
// written (so a client that has read a whole response finds it), or when
// the request ended otherwise. So does every message a client sends on a
// WebSocket.
type Served struct {
	// Account is the account named by the path, as in Received.
	Account string
	// WebSocket is true for a WebSocket upgrade request and for the messages
	// of its connection; false for HTTP requests.
	WebSocket bool
	// RequestID is the x-request-id header sent; "" when no headers were sent.
	// For a WebSocket message it is that of the connection's upgrade, which
	// tells connections apart.
	RequestID string
	// ResponseID is the resp_ id of the response created (the chatcmpl- id
	// of a chat completion); "" when the request was answered with an HTTP
	// error or cut before a response was created.
	ResponseID string
	// HTTPStatus is the status code sent; 0 when no headers were sent. A
	// successful WebSocket upgrade has 101; a WebSocket message has the
	// status member of the error message it was answered with, else 0.
	HTTPStatus int
	// Status is one of:
	//   - "completed", "incomplete", "failed": the response ended so, in a
	//     terminal event or the JSON body (for failed: also in-band refusals)
	//   - "error": an HTTP error status was sent, or the stream ended with an
	//     error event
	//   - "aborted": the connection was cut, the client went away, or the
	//     stream ended without a terminal event
	//   - "upgraded": a WebSocket upgrade succeeded; its turns are recorded
	//     one by one
	//   - "queued": a background create answered at once with JSON
	//   - "cancelled": a stream following a background response that was
	//     cancelled or deleted ended without a terminal event
	// Other routes than the create record "completed" for a 200.
	Status string
	// Code is the error code sent (the HTTP error's code, response.error.code
	// or the error event's code); "" when none.
	Code string
	// Usage is the usage the client was sent; zero when none was sent.
	Usage Usage
	// Events is the number of SSE events (or WebSocket event messages)
	// written; 0 for JSON answers and error messages.
	Events int
	// Seq is the Received.Seq of the request or message answered.
	Seq int64
}

// Requests returns a copy of every request received so far, in arrival order.
func (u *Upstream) Requests() []Received {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.requests)
}

// Served returns a copy of the answers recorded so far, in the order they
// were recorded.
func (u *Upstream) Served() []Served {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.served)
}

// InFlight is the number of requests to account being answered right now.
func (u *Upstream) InFlight(account string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	if a := u.accounts[account]; a != nil {
		return a.inFlight
	}
	return 0
}

// MaxInFlight is the largest number of requests to account that were in
// flight at once since the start or the last Reset.
func (u *Upstream) MaxInFlight(account string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	if a := u.accounts[account]; a != nil {
		return a.maxInFlight
	}
	return 0
}

// Wait blocks until cond returns true, or returns ctx.Err() when ctx ends
// first. It calls cond now and again after every change the fake sees (a
// request or message arriving, an answer recorded, a connection opened or
// closed, Reset), so cond reads the Upstream's methods, for example
//
//	err := up.Wait(ctx, func() bool { return up.InFlight("a") == 2 })
//	err := up.Wait(ctx, func() bool { return len(up.Served()) >= 1 })
//
// With Step.Hold it lets a test line up concurrent requests, and after a
// cancelled request wait for its answer to be recorded, without sleeping.
func (u *Upstream) Wait(ctx context.Context, cond func() bool) error {
	for {
		u.mu.Lock()
		if u.changed == nil {
			u.changed = make(chan struct{})
		}
		ch := u.changed
		u.mu.Unlock()
		// A change after ch was taken closes it: none is missed.
		if cond() {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// record ends a request: it leaves the in-flight count of a (nil for
// requests outside the responses path) and is logged.
func (u *Upstream) record(a *account, s Served) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if a != nil {
		a.inFlight--
	}
	if !u.NoLog {
		u.served = append(u.served, s)
	}
	u.notifyLocked()
}

// logRequest logs r and returns its Seq.
func (u *Upstream) logRequest(r *http.Request, name string, body []byte) int64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.seq++
	if u.NoLog {
		return u.seq
	}
	u.requests = append(u.requests, Received{Account: name, Method: r.Method, Path: r.URL.Path,
		Header: r.Header.Clone(), Body: body, Seq: u.seq})
	u.notifyLocked()
	return u.seq
}
