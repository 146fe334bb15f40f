package relaytest_test

import (
	"context"
	"fmt"
	"net/http"

	"github.com/coder/websocket"
	"github.com/tidwall/gjson"

	"github.com/relaykit/responsesrelay/relay/relaytest"
)

// Run two turns on one WebSocket, the second continuing the first with
// store:false through the connection-local cache.
func ExampleServer_WSURL() {
	srv := relaytest.NewServer()
	defer srv.Close()

	ctx := context.Background()
	c, _, err := websocket.Dial(ctx, srv.WSURL("acct-1"), &websocket.DialOptions{
		HTTPClient: srv.Client(),
		HTTPHeader: http.Header{"Authorization": {"Bearer sk-test"}},
	})
	if err != nil {
		panic(err)
	}
	defer c.CloseNow()

	prev := ""
	for _, input := range []string{"hello", "again"} {
		msg := `{"type":"response.create","model":"gpt-5","store":false,"input":"` + input + `"` + prev + `}`
		if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			panic(err)
		}
		for {
			_, event, err := c.Read(ctx)
			if err != nil {
				panic(err)
			}
			if gjson.GetBytes(event, "type").String() == "response.completed" {
				fmt.Println(gjson.GetBytes(event, "response.output.0.content.0.text"),
					gjson.GetBytes(event, "response.usage.input_tokens_details.cached_tokens"))
				prev = `,"previous_response_id":"` + gjson.GetBytes(event, "response.id").String() + `"`
				break
			}
		}
	}
	c.Close(websocket.StatusNormalClosure, "")
	// Output:
	// Echo: hello 0
	// Echo: again 11
}
