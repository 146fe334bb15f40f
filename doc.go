// Package responsesrelay is an embeddable relay for the OpenAI Responses API.
//
// A host application mounts [relay.Handler] on its own router, backs a few
// small interfaces with its own storage, and gets validation, admission
// control, account scheduling with stickiness, failover, SSE-aware errors and
// exactly one usage record per turn.
//
// # Packages
//
//   - relay: POST /v1/responses and its WebSocket mode (the same path
//     upgraded, each response.create a turn): validation, the failover
//     loop, streaming, errors in OpenAI's shape. relay/relaytest is a
//     scriptable fake upstream for tests, like net/http/httptest.
//   - scheduler: accounts, pools, sticky bindings, layered selection and
//     passive health (cooldowns, EWMAs).
//   - concurrency: the SlotLimiter interface and an in-memory limiter with
//     FIFO waiters.
//   - billing: the Gate asked before a turn, the Usage record and the
//     UsageSink told after it, and Async, a no-loss asynchronous sink.
//
// # One turn
//
// A turn is one response.create: a POST body over HTTP, or one message on a
// WebSocket. Both run the same pipeline; only the two ends differ.
//
//	client ─ auth ─ validate ─ user slot (bounded wait, SSE pings) ─ billing gate
//	       ─ select account (previous_response_id ▸ session ▸ balanced top-K) ─ account slot
//	       ─ upstream ─ events classified once ─ client
//	       ─ finish: health outcome, sticky binding, slots released, one usage record
//	  on an upstream failure before any event reached the client: exclude that account, select again
//
// # Mounting
//
//	pool := scheduler.NewStaticPool()
//	pool.Add("default", &scheduler.Account{ID: "a1", BaseURL: "https://api.openai.com/v1", Concurrency: 4})
//	h := &relay.Handler{
//		Scheduler:   &scheduler.Scheduler{Pool: pool},
//		Credentials: scheduler.StaticKeys{"a1": os.Getenv("OPENAI_API_KEY")},
//		Usage:       billing.NewAsync(mySink, billing.DeliveryOptions{}),
//		Authenticate: func(r *http.Request) (*relay.Subject, error) {
//			return lookupKey(r.Header.Get("Authorization")) // the host's own API keys
//		},
//	}
//	mux.Handle("POST /v1/responses", h)
//
// # Watching it
//
// relay.Handler.Observer receives every turn's start, slot waits, upstream
// attempts and end (its usage, time to first token included) as plain
// structs; Scheduler.OnAccountEvent reports cooldowns and recoveries;
// Scheduler.Snapshot is the state of every account, for an operator page.
// The examples module adapts them to Prometheus and OpenTelemetry.
//
// The library owns no storage: users, keys, balances and usage tables stay
// in the host's database, reached through the interfaces above.
package responsesrelay
