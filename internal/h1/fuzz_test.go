package h1

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// FuzzAnswer: whatever bytes an upstream answers with, RoundTrip and the
// body's reads return (no panic, no wait past the upstream's close, at
// most MaxHeaderBytes of head read), an answer's status is the one
// net/http reads from the same bytes, and a connection goes back to the
// pool only after an answer read to its end that keeps it open.
func FuzzAnswer(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
		"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nrest",
		"HTTP/1.0 200 OK\r\n\r\nok",
		"HTTP/1.1 101 Switching Protocols\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Trailer: " + strings.Repeat("a", 5000) + "\r\n\r\n",
		"HTTP/1.1 200 OK\r\n" + strings.Repeat("X: y\r\n", 2000) + "\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, answer []byte) {
		server, client := net.Pipe()
		var wg sync.WaitGroup
		wg.Go(func() {
			defer server.Close()
			if _, err := http.ReadRequest(bufio.NewReader(server)); err != nil {
				return
			}
			server.Write(answer) // fails once the client closes its end
		})
		tr := &Transport{Fallback: failing{}, MaxHeaderBytes: 4 << 10,
			DialContext: func(context.Context, string, string) (net.Conn, error) { return client, nil }}
		defer func() {
			tr.CloseIdleConnections()
			client.Close()
			wg.Wait()
		}()
		req, _ := http.NewRequest(http.MethodPost, "http://upstream.test/v1/responses", strings.NewReader("{}"))
		resp, err := tr.RoundTrip(req)
		if err != nil {
			if len(tr.idle) != 0 {
				t.Fatal("a failed exchange's connection was pooled")
			}
			return
		}
		// net/http reads the same final status from the same bytes.
		br := bufio.NewReader(bytes.NewReader(answer))
		var want *http.Response
		for {
			want, err = http.ReadResponse(br, req)
			if err != nil {
				t.Fatalf("h1 read status %d where net/http fails: %v", resp.StatusCode, err)
			}
			if want.StatusCode >= 200 {
				break
			}
		}
		if resp.StatusCode != want.StatusCode {
			t.Fatalf("status %d, net/http reads %d", resp.StatusCode, want.StatusCode)
		}
		_, rerr := io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if rerr != nil && len(tr.idle) != 0 {
			t.Fatal("a connection whose body failed was pooled")
		}
		if len(tr.idle) != 0 && resp.Close {
			t.Fatal("an answer that closes its connection was pooled")
		}
	})
}
