package relay

import (
	"net/http"
	"time"

	"github.com/relaykit/responsesrelay/internal/h1"
)

// NewTransport returns the transport the relay sends https and proxied
// upstream requests through when Handler.Transport is nil: HTTP/2 when
// the upstream offers it, many idle connections per host (a relay talks
// to few hosts a lot), no transparent compression (SSE is relayed as it
// comes). A host that wraps or tunes a transport starts from it.
func NewTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 1024
	t.MaxIdleConnsPerHost = 256
	t.IdleConnTimeout = 90 * time.Second
	t.DisableCompression = true
	// Each open stream keeps its connection's buffers: small ones keep an
	// idle stream's memory down (BENCHMARKS.md). Larger reads and writes
	// (a big request body, an event stream's bursts) go around them.
	// net/http's 4 KiB read buffer measured 15 % slower on 64 streams at
	// once (relaybench stream, 0.85x against 1.01x ReverseProxy's).
	t.ReadBufferSize = 1 << 10
	t.WriteBufferSize = 1 << 10
	return t
}

// defaultTransport is the transport of a Handler whose Transport is nil:
// internal/h1 for cleartext upstreams with no proxy, NewTransport's for
// the rest.
func defaultTransport() http.RoundTripper { return h1.New(NewTransport()) }
