// Package redisstore makes several relay instances behave as one by keeping
// their shared state in Redis (5.0 or later; Redis Cluster works too):
//
//   - Limiter: a concurrency.SlotLimiter (and Waiter, Counter) for
//     relay.Handler.Limiter (user slots) and scheduler.Scheduler.Limiter
//     (account slots), so a user's or an account's limit holds across
//     instances. Given to both, with the Store on the same client, it is a
//     scheduler.Batcher: a turn takes both slots and reads its bindings in
//     one round trip, and gives the slots back and writes its binding in
//     one more (on one Redis server; a Cluster client goes call by call).
//     With scheduler.Scheduler.SlotLinger, a turn without a user slot
//     keeps its account's lease for the next turn through the same
//     instance, which then takes it without a round trip.
//   - Store: a scheduler.Store, so sticky sessions and
//     previous_response_id bindings made by one instance are seen by all.
//   - Events: account health over pub/sub, so a 429 seen by one instance
//     benches the account on all.
//   - Conversations: a conversation.Store for relay.Handler.Conversations,
//     so a conversation served by one instance can move to another
//     account through any instance.
//   - Ledger: a billing.Ledger for relay.Handler.Ledger, so budgets and
//     rate limits per API key and per user hold across instances (its
//     keys share one Cluster slot; see Ledger).
//
// All take a go-redis client the host creates and closes; share one
// client among them, made with NewClient or with ContextTimeoutEnabled set
// so that timeouts and request contexts bound every call. Use the same key
// prefix on every instance.
//
// # Slots
//
// A slot is a lease in a sorted set per key (Prefix+"slot:{key}"): member
// a unique lease id, score its expiry in Redis's clock. Acquiring runs one
// Lua script that drops expired leases and adds one when fewer than limit
// remain. One goroutine per Limiter refreshes all the leases it holds
// every RefreshInterval (20 s by default) to LeaseTTL (60 s), so a stream
// of any length keeps its slot, and an instance that dies loses its slots
// within LeaseTTL. Release removes the lease at once; when Redis cannot be
// reached it is retried in the background until the lease would have
// expired anyway.
//
// # Waiting and fairness
//
// A caller of Acquire that finds the key full takes a ticket in a queue in
// Redis, ordered by Redis's clock at arrival. Slots go to tickets strictly
// in that order, across instances: a ticket is granted when fewer tickets
// are ahead of it than there are free slots, and TryAcquire (used by the
// scheduler for account slots) does not take a slot that queued waiters
// are owed. A release publishes a message on the key's channel; the
// waiters of every instance that has some for the key wake and check, and
// they also check every PollInterval (250 ms) in case a message was lost or
// a lease expired. A waiter that stops checking (its instance died) loses
// its ticket after 8 poll intervals (at least 2 s), and a waiter that was
// dropped so by mistake (a long pause) queues again at the back. So the
// order is first in, first out, except after such pauses: FIFO-ish.
//
// The queue bound (concurrency.WaitOptions.MaxWaiters) counts the waiters
// of all instances. Give every instance the same LeaseTTL and
// PollInterval: each drops the tickets it finds stale by its own setting.
//
// Run Redis without maxmemory or with maxmemory-policy noeviction: an
// evicted lease is a slot handed out twice.
//
// # Redis unreachable
//
// By default the Limiter fails closed: TryAcquire and Acquire return an
// error wrapping ErrUnavailable, which relay.Handler answers with 503
// "Concurrency backend unavailable, please retry later". With FailOpen, each
// instance counts slots on its own while Redis is away, so the limit holds
// per instance instead of across them. Either way the outage is logged
// (once per 10 s) and so is the recovery. Store errors cost stickiness only
// (the scheduler logs them and goes on); Events drop what they cannot send.
//
// # Example
//
//	rdb, err := redisstore.NewClient("redis://127.0.0.1:6379/0")
//	if err != nil { ... }
//	defer rdb.Close()
//	limiter := redisstore.NewLimiter(rdb, nil)
//	defer limiter.Close()
//	events := redisstore.NewEvents(rdb, nil)
//	defer events.Close()
//	sched := &scheduler.Scheduler{
//		Pool:           pool,
//		Store:          redisstore.NewStore(rdb, nil),
//		Limiter:        limiter,
//		OnAccountEvent: events.Publish,
//	}
//	go events.Run(ctx, sched)
//	h := &relay.Handler{
//		Scheduler:     sched,
//		Limiter:       limiter,
//		Credentials:   keys,
//		Conversations: redisstore.NewConversations(rdb, nil),
//		Ledger:        redisstore.NewLedger(rdb, nil), // and billing.Settling(ledger, sink) for the usage
//	}
package redisstore
