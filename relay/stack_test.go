package relay_test

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"

	"github.com/relaykit/responsesrelay/relay"
	"github.com/relaykit/responsesrelay/relay/relaytest"
)

// TestStreamStackStays8KiB: a streaming turn that has committed its
// answer and waits for a silent upstream has never needed more than 8 KiB
// of goroutine stack, so that an idle stream's handler keeps 8 KiB and not
// the 16 KiB a single deep call would leave it with (freshstack.go;
// BENCHMARKS.md, "Memory per open stream"). A process whose goroutines may
// not grow past 8 KiB (debug.SetMaxStack) serves the turn: it dies if any
// goroutine on the way needs more. The process is a child, since the
// limit is the whole process's and a test client alone needs more.
func TestStreamStackStays8KiB(t *testing.T) {
	if os.Getenv("RELAY_TEST_STACK_CHILD") == "1" {
		stackChild(t)
		return
	}
	if raceEnabled {
		t.Skip("stack frames are larger under the race detector; .ci/run runs this test without it")
	}
	// A plain request, and one whose JSON schema nests 32 deep (what
	// validating it takes stays within 8 KiB too; a request nested much
	// deeper grows the stack while it is validated: BENCHMARKS.md).
	for _, depth := range []string{"0", "32"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestStreamStackStays8KiB$", "-test.count=1")
		cmd.Env = append(os.Environ(), "RELAY_TEST_STACK_CHILD=1", "RELAY_TEST_STACK_DEPTH="+depth)
		out, err := cmd.CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte("stack child: 3 events, waiting")) {
			t.Fatalf("child, schema depth %s: %v\n%.4000s", depth, err, out)
		}
	}
}

// stackChild serves one streaming turn (its text.format schema nested
// RELAY_TEST_STACK_DEPTH deep, if set) through the relay with an 8 KiB
// stack limit, reads its first three events and exits while the upstream
// holds the rest. Its client is a bare socket: net/http's client needs
// more than 8 KiB itself.
func stackChild(t *testing.T) {
	debug.SetMaxStack(8 << 10)
	// Host hooks run on goroutines of their own that grow to 16 KiB for
	// the call and end with it (internal/hookcall/stack.go): the subject
	// comes from a middleware, as relayd's does, so that none runs here.
	var h *relay.Handler
	_, _, up := benchRelayWith(t, 5, func(rh *relay.Handler) { h, rh.Authenticate = rh, nil })
	subj := &relay.Subject{UserID: "u", APIKeyID: "k", GroupID: "g", Concurrency: 1024}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(relay.WithSubject(r.Context(), subj)))
	}))
	up.Script("a", relaytest.Step{Deltas: 5, After: 3, Hold: make(chan struct{})})
	c, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		fmt.Println("stack child:", err)
		os.Exit(1)
	}
	body := `{"model":"gpt-5","stream":true,"input":"hi"}`
	if d, _ := strconv.Atoi(os.Getenv("RELAY_TEST_STACK_DEPTH")); d > 0 {
		body = `{"model":"gpt-5","stream":true,"input":"hi","metadata":{},"text":{"format":{"type":"json_schema","name":"n","schema":` +
			strings.Repeat(`{"type":"array","items":`, d) + `{"type":"string"}` + strings.Repeat(`}`, d) + `}}}`
	}
	fmt.Fprintf(c, "POST /v1/responses HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	var got []byte
	buf := make([]byte, 512)
	for bytes.Count(got, []byte("\nevent: ")) < 3 {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			fmt.Printf("stack child: %v after %q\n", err, got)
			os.Exit(1)
		}
	}
	if !bytes.HasPrefix(got, []byte("HTTP/1.1 200")) {
		fmt.Printf("stack child: answer %q\n", got)
		os.Exit(1)
	}
	fmt.Println("stack child: 3 events, waiting")
	os.Stdout.Sync()
	os.Exit(0) // the upstream still holds the stream: nothing to clean up
}
