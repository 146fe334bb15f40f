package relaytest

import (
	"net/http"
	"net/http/httptest"
	"net/url"
)

// Server is an Upstream listening on a loopback address, like
// httptest.Server. Its methods are the Upstream's plus Close, BaseURL and
// Client.
type Server struct {
	*Upstream
	// URL is the base URL of the listener, like "http://127.0.0.1:41234",
	// without a trailing slash.
	URL string

	ts *httptest.Server
}

// NewServer starts a Server on a loopback address. The caller must call
// Close when finished with it.
func NewServer() *Server {
	u := New()
	ts := httptest.NewServer(u)
	return &Server{Upstream: u, URL: ts.URL, ts: ts}
}

// Close shuts the server down and returns when every handler has returned.
// Held, hung and idle requests give up, and open connections (including
// ones cut mid-response, and WebSockets, which are cut without a close
// message) are closed, so no goroutine of the server is left behind. The
// Upstream's logs stay readable.
func (s *Server) Close() {
	s.shutdown()
	s.ts.CloseClientConnections()
	s.ts.Close()
	// httptest stops tracking a connection once it is hijacked; wait for
	// the handlers that cut theirs.
	s.handlers.Wait()
}

// BaseURL is the base URL a client or relay would use for account, ending in
// "/v1": s.URL+"/"+account+"/v1", or s.URL+"/v1" for the account "".
// Requests go to BaseURL(account)+"/responses".
func (s *Server) BaseURL(account string) string {
	if account == "" {
		return s.URL + "/v1"
	}
	return s.URL + "/" + url.PathEscape(account) + "/v1"
}

// Client returns an HTTP client for the server whose idle connections are
// closed by Close.
func (s *Server) Client() *http.Client { return s.ts.Client() }
