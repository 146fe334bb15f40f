package relaytrace_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/relaykit/responsesrelay/examples/relaytrace"
	"github.com/relaykit/responsesrelay/relay"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/relaykit/responsesrelay/scheduler"
)

// Trace a relay whose first account answers 429: the turn's span has one
// child per upstream attempt.
func Example() {
	upstream := relaytest.NewServer() // stands in for the real upstreams
	defer upstream.Close()
	upstream.Script("acct-1", relaytest.Step{Status: http.StatusTooManyRequests})

	// A real host passes its SDK TracerProvider with an exporter; this one
	// keeps the spans for printing.
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer tp.Shutdown(context.Background())

	pool := scheduler.NewStaticPool()
	pool.Add("default", &scheduler.Account{ID: "acct-1", BaseURL: upstream.BaseURL("acct-1"), Priority: 0})
	pool.Add("default", &scheduler.Account{ID: "acct-2", BaseURL: upstream.BaseURL("acct-2"), Priority: 1})
	h := &relay.Handler{
		Scheduler:   &scheduler.Scheduler{Pool: pool},
		Credentials: scheduler.StaticKeys{"acct-1": "sk-key-1", "acct-2": "sk-key-2"},
		Observer:    relaytrace.New(tp, relaytrace.Options{}),
		Authenticate: func(*http.Request) (*relay.Subject, error) {
			return &relay.Subject{UserID: "u1", APIKeyID: "key-1", GroupID: "default"}, nil
		},
	}
	defer h.CloseIdleConnections()
	srv := httptest.NewServer(h)
	defer srv.Close()

	resp, err := srv.Client().Post(srv.URL+"/v1/responses", "application/json",
		strings.NewReader(`{"model":"gpt-5","input":"Say hi"}`))
	if err != nil {
		panic(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	h.Shutdown(context.Background()) // the turn's span ends when the turn is over

	ended := spans.Ended() // children end before their parent
	turn := ended[len(ended)-1]
	fmt.Println(turn.Name(), attr(turn, relaytrace.AttrStatus), attr(turn, relaytrace.AttrHTTPStatus))
	for _, s := range ended[:len(ended)-1] {
		fmt.Println("  ", s.Name(), attr(s, relaytrace.AttrAccountID), attr(s, relaytrace.AttrOutcome), s.Status().Code)
	}
	// Output:
	// responses.turn completed 200
	//    responses.attempt acct-1 failover Error
	//    responses.attempt acct-2 served Unset
}

func attr(s sdktrace.ReadOnlySpan, k attribute.Key) string {
	for _, kv := range s.Attributes() {
		if kv.Key == k {
			return kv.Value.Emit()
		}
	}
	return ""
}
