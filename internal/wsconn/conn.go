// Package wsconn is the client side of a WebSocket (RFC 6455) that the
// relay keeps to an upstream: text messages out, messages in, control
// frames answered while reading.
//
// It exists for what a general library does not offer on the relay's hot
// path: Read returns a message in place, in the connection's own read
// buffer, with no lock taken per message; Buffered tells whether the next
// message is already read, so the caller can batch what it forwards; and
// the goroutine that reads may change between messages (one at a time), so
// a turn reads its own events instead of receiving them from another
// goroutine. Compression and subprotocols are not negotiated, and text
// messages are not checked for valid UTF-8: the relay passes events on as
// the upstream wrote them.
package wsconn

import (
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
)

// Conn is a client WebSocket connection. Read, Buffered and SetReadLimit
// belong to one goroutine at a time; the write methods, Ping and CloseNow
// may be called from any goroutine.
type Conn struct {
	rwc io.ReadWriteCloser

	// Read side (one reader at a time).
	buf       []byte // read buffer; buf[r:w] is unread
	r, w      int
	frag      []byte // a fragmented message being assembled
	inFrag    bool
	readLimit int64
	readErr   error

	// Write side.
	wmu     sync.Mutex
	wbuf    []byte
	maskBuf [maskBatch]byte // crypto/rand bytes for masking keys
	maskPos int             // next unused byte of maskBuf

	pong      chan struct{} // a pong came in (for Ping)
	closed    chan struct{}
	closeOnce sync.Once
	closing   atomic.Bool
}

// Sizes of the read buffer: it starts at initialBuf and is put back to
// that size after a message that needed more than maxKeptBuf.
const (
	initialBuf = 8 << 10
	maxKeptBuf = 64 << 10
)

// maskBatch is how many random bytes a connection reads at once for its
// masking keys: 64 frames' worth.
const maskBatch = 256

// DefaultReadLimit caps a message when SetReadLimit was not called.
const DefaultReadLimit = 32 << 20

func newConn(rwc io.ReadWriteCloser) *Conn {
	return &Conn{rwc: rwc, buf: make([]byte, initialBuf), readLimit: DefaultReadLimit, maskPos: maskBatch,
		pong: make(chan struct{}, 1), closed: make(chan struct{})}
}

// HandshakeError is a handshake the server answered with something other
// than 101 Switching Protocols. Body holds up to 64 KiB of its body.
type HandshakeError struct {
	Status int
	Header http.Header
	Body   []byte
}

func (e *HandshakeError) Error() string {
	return fmt.Sprintf("websocket handshake: server answered %d", e.Status)
}

// Dial opens a WebSocket to url (http, https, ws or wss) through client
// (nil: http.DefaultClient), sending header with the handshake. ctx bounds
// the handshake only. A server that answers with another status than 101
// gives a *HandshakeError. Redirects are never followed, whatever the
// client's CheckRedirect says: a 3xx answer is a *HandshakeError too, so
// the handshake's headers (credentials) reach only the host url names.
func Dial(ctx context.Context, client *http.Client, url string, header http.Header) (*Conn, error) {
	if client == nil {
		client = http.DefaultClient
	}
	c := *client
	c.CheckRedirect = noRedirect
	if c.Timeout > 0 {
		// The client's Timeout would also end the upgraded connection,
		// which is the response body: it bounds the handshake instead.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Timeout)
		defer cancel()
		c.Timeout = 0
	}
	client = &c
	switch {
	case strings.HasPrefix(url, "ws://"):
		url = "http://" + url[len("ws://"):]
	case strings.HasPrefix(url, "wss://"):
		url = "https://" + url[len("wss://"):]
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	var nonce [16]byte
	rand.Read(nonce[:])
	key := base64.StdEncoding.EncodeToString(nonce[:])
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", key)
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		return nil, &HandshakeError{Status: resp.StatusCode, Header: resp.Header, Body: body}
	}
	rwc, ok := resp.Body.(io.ReadWriteCloser)
	switch {
	case !ok:
		err = fmt.Errorf("websocket handshake: response body %T is not writable", resp.Body)
	case !HeaderHasToken(resp.Header, "Connection", "upgrade") || !HeaderHasToken(resp.Header, "Upgrade", "websocket"):
		err = errors.New("websocket handshake: 101 without Connection/Upgrade headers")
	case resp.Header.Get("Sec-WebSocket-Accept") != acceptKey(key):
		err = errors.New("websocket handshake: wrong Sec-WebSocket-Accept")
	case resp.Header.Get("Sec-WebSocket-Extensions") != "":
		err = errors.New("websocket handshake: server chose an extension that was not offered")
	case resp.Header.Get("Sec-WebSocket-Protocol") != "":
		err = errors.New("websocket handshake: server chose a subprotocol that was not offered")
	}
	if err != nil {
		resp.Body.Close()
		return nil, err
	}
	return newConn(rwc), nil
}

func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

func acceptKey(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// HeaderHasToken reports whether a comma-separated header (Connection,
// Upgrade) lists token, in any case.
func HeaderHasToken(h http.Header, key, token string) bool {
	for _, v := range h.Values(key) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// CloseNow closes the connection without a closing handshake. A Read or
// write in progress returns an error.
func (c *Conn) CloseNow() error {
	var err error
	c.closeOnce.Do(func() {
		close(c.closed)
		err = c.rwc.Close()
	})
	return err
}

// Closed is closed once the connection is.
func (c *Conn) Closed() <-chan struct{} { return c.closed }

// ErrClosed is returned by calls on a closed connection.
var ErrClosed = errors.New("websocket: connection closed")

// CloseError is the close frame the server sent.
type CloseError struct {
	Code   int // 1005 when the frame had none
	Reason string
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("websocket closed by peer: %d %s", e.Code, e.Reason)
}

// ProtocolError is a frame that breaks RFC 6455.
type ProtocolError struct{ Msg string }

func (e *ProtocolError) Error() string { return "websocket protocol violation: " + e.Msg }

// ErrTooBig is returned by Read for a message over the read limit; the
// connection is closed with 1009.
var ErrTooBig = errors.New("websocket: message over the read limit")

// ErrUnexpectedEOF is returned by Read when the server closed the
// connection without a close frame.
var ErrUnexpectedEOF = fmt.Errorf("websocket: connection ended without a close frame: %w", io.ErrUnexpectedEOF)
