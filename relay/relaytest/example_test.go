package relaytest_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/relaykit/responsesrelay/relay/relaytest"
)

// Start a fake upstream, send it one non-streaming request for the account
// "acct-1" and print the answer.
func Example() {
	srv := relaytest.NewServer()
	defer srv.Close()

	req, err := http.NewRequest(http.MethodPost, srv.BaseURL("acct-1")+"/responses",
		strings.NewReader(`{"model":"gpt-5","input":"hello"}`))
	if err != nil {
		panic(err)
	}
	req.Header.Set("Authorization", "Bearer sk-test")
	req.Header.Set("Content-Type", "application/json")
	resp, err := srv.Client().Do(req)
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		panic(err)
	}
	fmt.Println(resp.StatusCode, gjson.GetBytes(body, "output.0.content.0.text"))
	fmt.Println(srv.Served()[0].Usage)
	// Output:
	// 200 Echo: hello
	// {11 0 5 0}
}

// Script an account to refuse the first request with a 429 and cut the
// stream of the second after three events.
func ExampleUpstream_Script() {
	srv := relaytest.NewServer()
	defer srv.Close()
	srv.Script("acct-1",
		relaytest.Step{Status: http.StatusTooManyRequests, Header: http.Header{"Retry-After": {"2"}}},
		relaytest.Step{After: 3, Cut: true},
	)

	for range 3 {
		req, _ := http.NewRequest(http.MethodPost, srv.BaseURL("acct-1")+"/responses",
			strings.NewReader(`{"model":"gpt-5","stream":true,"input":"hi"}`))
		req.Header.Set("Authorization", "Bearer sk-test")
		resp, err := srv.Client().Do(req)
		if err != nil {
			panic(err)
		}
		events, err := relaytest.ReadSSE(resp.Body)
		resp.Body.Close()
		fmt.Println(resp.StatusCode, len(events), err != nil)
	}
	for _, s := range srv.Served() {
		fmt.Println(s.Status, s.Events)
	}
	// Output:
	// 429 0 false
	// 200 3 true
	// 200 13 false
	// error 0
	// aborted 3
	// completed 13
}
