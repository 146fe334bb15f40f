package relay_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/relaykit/responsesrelay/relay"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/relaykit/responsesrelay/scheduler"
	"github.com/tidwall/gjson"
)

// Mount the relay in front of one upstream account (here the fake upstream)
// and send it a request as a client would.
func Example() {
	upstream := relaytest.NewServer()
	defer upstream.Close()

	pool := scheduler.NewStaticPool()
	pool.Add("default", &scheduler.Account{ID: "acct-1", BaseURL: upstream.BaseURL("acct-1"), Concurrency: 4})
	h := &relay.Handler{
		Scheduler:   &scheduler.Scheduler{Pool: pool},
		Credentials: scheduler.StaticKeys{"acct-1": "sk-upstream-key"},
		Authenticate: func(r *http.Request) (*relay.Subject, error) {
			if r.Header.Get("Authorization") != "Bearer rk-demo" {
				return nil, nil // 401
			}
			return &relay.Subject{UserID: "u1", APIKeyID: "key-1", GroupID: "default", Concurrency: 2}, nil
		},
	}
	mux := http.NewServeMux()
	mux.Handle("POST /v1/responses", h)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	req, _ := http.NewRequest("POST", srv.URL+"/v1/responses", strings.NewReader(`{"model":"gpt-5","input":"Say hi"}`))
	req.Header.Set("Authorization", "Bearer rk-demo")
	resp, err := srv.Client().Do(req)
	if err != nil {
		fmt.Println(err)
		return
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	srv.Client().CloseIdleConnections()
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()

	fmt.Println(resp.StatusCode, gjson.GetBytes(body, "status"), gjson.GetBytes(body, "model"))
	// Output: 200 completed gpt-5
}
