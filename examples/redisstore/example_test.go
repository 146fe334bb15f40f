package redisstore_test

import (
	"context"
	"log"
	"net/http"

	"github.com/relaykit/responsesrelay/examples/redisstore"
	"github.com/relaykit/responsesrelay/relay"
	"github.com/relaykit/responsesrelay/scheduler"
)

// Two or more relay processes started like this share user and account
// limits, sticky bindings and account cooldowns. (No output: it needs a
// Redis server.)
func Example() {
	ctx := context.Background()
	rdb, err := redisstore.NewClient("redis://127.0.0.1:6379/0")
	if err != nil {
		log.Fatal(err)
	}
	defer rdb.Close() // after the limiter and events below

	limiter := redisstore.NewLimiter(rdb, nil)
	defer limiter.Close()
	events := redisstore.NewEvents(rdb, nil)
	defer events.Close()

	pool := scheduler.NewStaticPool()
	pool.Add("default", &scheduler.Account{ID: "a1", BaseURL: "https://api.openai.com/v1", Concurrency: 4})
	sched := &scheduler.Scheduler{
		Pool:           pool,
		Store:          redisstore.NewStore(rdb, nil),
		Limiter:        limiter,
		OnAccountEvent: events.Publish,
	}
	go events.Run(ctx, sched)

	h := &relay.Handler{
		Scheduler:   sched,
		Limiter:     limiter,
		Credentials: scheduler.StaticKeys{"a1": "sk-..."},
	}
	http.Handle("POST /v1/responses", h)
	log.Fatal(http.ListenAndServe("127.0.0.1:8080", nil))
}
