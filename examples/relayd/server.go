package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/concurrency"
	"github.com/relaykit/responsesrelay/examples/redisstore"
	"github.com/relaykit/responsesrelay/examples/relaymetrics"
	"github.com/relaykit/responsesrelay/examples/sqlconversation"
	"github.com/relaykit/responsesrelay/examples/sqlusage"
	"github.com/relaykit/responsesrelay/relay"
	"github.com/relaykit/responsesrelay/scheduler"
)

// server is relayd without its listener: tests serve handler over
// httptest, main over an http.Server.
type server struct {
	handler http.Handler
	relay   *relay.Handler
	// wsConns counts the open WebSocket connections per API key.
	wsConns *concurrency.Memory
	sched   *scheduler.Scheduler
	// usage takes the records of finished turns: spool or async, in front
	// of sink.
	usage billing.UsageSink
	spool *billing.Spool
	async *billing.Async
	sink  *sqlusage.Sink
	log   *slog.Logger
	// access takes the access lines: log, unless main defers their
	// formatting to its log writer's goroutine.
	access *slog.Logger

	// Money: the price table, and the ledger that holds every turn when
	// a key has a quota (nil otherwise), with the journal of this
	// process's holds when there is a spool.
	prices     *billing.Prices
	ledger     ledger
	ledgerKind string
	holds      *holdJournal
	keys       []keyInfo // the configured keys, for /debug/keys

	// The conversation store's database or own Redis client, if any.
	convSQL   *sqlconversation.Store
	convRedis *redis.Client

	// Shared state in Redis, when the config names a server.
	rdb        *redis.Client
	limiter    *redisstore.Limiter
	userSlots  concurrency.Counter // the relay's user slots, for tests and checks
	events     *redisstore.Events
	stopEvents context.CancelFunc
	eventsDone chan struct{}

	// Operator views: Prometheus metrics and the account snapshot.
	metrics  *relaymetrics.Metrics
	registry *prometheus.Registry

	closeOnce sync.Once
	closeErr  error
}

// newServer builds the pool, the key ring, the usage pipeline and the
// routes of a validated config. The caller must Close it.
func newServer(cfg Config, logger *slog.Logger) (*server, error) {
	kr, err := newKeyring(cfg.APIKeys)
	if err != nil {
		return nil, err
	}
	prices, errs := cfg.priceTable()
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	pool, keys := buildPool(cfg.Accounts)
	creds, err := buildCredentials(cfg.Accounts, keys, logger)
	if err != nil {
		return nil, err
	}
	s := &server{log: logger, access: logger, prices: prices, keys: keyInfos(cfg.APIKeys)}
	s.sched = &scheduler.Scheduler{
		Pool:           pool,
		Logger:         logger,
		OnAccountEvent: s.accountEvent,
	}

	if cfg.Redis != "" {
		if err := s.openRedis(cfg.Redis); err != nil {
			return nil, err
		}
		s.sched.SlotLinger = cfg.slotLinger()
	}
	if err := s.openUsage(cfg.Usage, cfg.hasLimits()); err != nil {
		s.closeRedis()
		return nil, err
	}

	// closeEarly undoes what opened so far when a later step fails.
	closeEarly := func() {
		s.closeConversations()
		if s.async != nil {
			s.async.Close(context.Background())
		}
		if s.spool != nil {
			s.spool.Close(context.Background())
		}
		s.closeHolds()
		s.sink.Close()
		s.closeRedis()
	}
	convs, err := s.openConversations(cfg.Conversations, cfg.Usage, cfg.Redis)
	if err != nil {
		closeEarly()
		return nil, err
	}

	groups := configGroups(cfg.Accounts)
	if err := s.openMetrics(groups); err != nil {
		closeEarly()
		return nil, err
	}
	s.relay = &relay.Handler{
		Observer:      s.metrics.Observer(),
		Scheduler:     s.sched,
		Credentials:   creds,
		Usage:         s.usage,
		Conversations: convs,
		Logger:        logger,
		Prices:        prices,
	}
	if logger.Enabled(context.Background(), slog.LevelDebug) {
		// Only then: the line's arguments cost allocations per record even
		// when the level drops it.
		s.relay.Usage = usageLogger{next: s.usage, log: logger}
	}
	if s.ledger != nil { // a nil interface, not a nil pointer, when none
		s.relay.Ledger = s.ledger
	}
	if s.limiter != nil { // a nil *Limiter would make a non-nil interface
		s.relay.Limiter, s.userSlots = s.limiter, s.limiter
	} else {
		mem := concurrency.NewMemory()
		s.relay.Limiter, s.userSlots = mem, mem
	}
	// Both transports on one path: the relay serves POST and, a GET
	// upgrade (authenticated before the upgrade) in WebSocket mode.
	s.wsConns = concurrency.NewMemory()
	s.relay.WebSocket = &relay.WebSocketOptions{MaxConnsPerKey: cfg.WSMaxConnsPerKey, ConnLimiter: s.wsConns}
	mux := http.NewServeMux()
	// The relay serves every route of the Responses API below these
	// (retrieve, delete, input items, cancel, input tokens, compact) and
	// the model list.
	relayed := s.authenticate(kr, s.relay)
	mux.Handle("/v1/responses", relayed)
	mux.Handle("/v1/responses/", relayed)
	mux.Handle("/v1/models", relayed)
	mux.Handle("/v1/models/", relayed)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
	s.adminRoutes(mux, cfg.AdminToken, groups)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "invalid_request_error",
			"Invalid URL ("+r.Method+" "+r.URL.Path+"): relayd serves /v1/responses (POST, or GET with a WebSocket upgrade), /v1/responses/{id} and /v1/models")
	})
	s.handler = s.accessLog(mux)
	return s, nil
}

// openRedis moves the user and account slots and the sticky bindings to
// Redis, and shares account cooldowns with the other instances on it.
func (s *server) openRedis(url string) error {
	rdb, err := redisstore.NewClient(url)
	if err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	// Fail at start rather than answer every turn 503: the limiter fails
	// closed while Redis is away.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		return fmt.Errorf("redis at %s: %w", redisAddr(url), err)
	}
	s.rdb = rdb
	s.limiter = redisstore.NewLimiter(rdb, &redisstore.LimiterOptions{Logger: s.log})
	// Pub/sub ignores database numbers: name the database in the channel
	// so that clusters on one server in different databases stay apart.
	s.events = redisstore.NewEvents(rdb, &redisstore.EventsOptions{
		Prefix: fmt.Sprintf("%sdb%d:", redisstore.DefaultPrefix, rdb.Options().DB),
		Logger: s.log,
	})
	s.sched.Limiter = s.limiter
	s.sched.Store = redisstore.NewStore(rdb, nil)
	runCtx, stop := context.WithCancel(context.Background())
	s.stopEvents, s.eventsDone = stop, make(chan struct{})
	go func() {
		defer close(s.eventsDone)
		s.events.Run(runCtx, s.sched)
	}()
	return nil
}

// closeRedis stops sharing events, ends the leases' refreshes and closes
// the client. Slots were released by the turns that held them.
func (s *server) closeRedis() error {
	if s.rdb == nil {
		return nil
	}
	s.stopEvents()
	<-s.eventsDone
	s.events.Close() // publishes what is queued first
	err := s.limiter.Close()
	return errors.Join(err, s.rdb.Close())
}

// queueWorkers is how many batches the in-memory queue writes to the
// database at once: one gathers the records queued while the other's
// transaction runs. The queue forms the batches itself (the SQL sink is a
// billing.BatchSink), so more workers would only split them.
const queueWorkers = 2

// spoolWorkers is how many deliveries the spool runs at once. A worker
// hands the SQL sink the records waiting behind its own in one batch,
// but a lone record goes through Record, and the sink batches the
// records of concurrent Record calls: this is what lets a batch fill up
// (sqlusage.DefaultMaxBatch rows) at moderate load.
const spoolWorkers = sqlusage.DefaultMaxBatch

// usageMaxDelay is how long a batch of usage records waits for more
// before it is written: in the queue (BatchWait) or, behind the spool, in
// the SQL sink (WithMaxDelay). Records reach the database after their
// turn has ended, so the wait delays no client; without it a lone record
// is a transaction of its own, and at every load the commits cost more CPU
// than the turns' relaying. A commit costs about 190 us of CPU and a row
// about 10 (sqlusage's BenchmarkSQLiteRecordBatch): at 20 ms, one client
// at a time made batches of about 10 records, 30 us a record, taken from
// the cores the turns run on.
const usageMaxDelay = 100 * time.Millisecond

// openUsage opens the database and puts the spool, or an in-memory queue,
// in front of it. With a ledger (withLedger: a key has a quota), each
// record settles its turn before it is written, so that a record the
// queue retries or the spool replays after a crash settles too, once.
func (s *server) openUsage(cfg UsageConfig, withLedger bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var opts []sqlusage.Option
	if cfg.Spool != "" {
		// The spool hands over a lone record with Record: the sink lets
		// such records gather into batches. Behind the queue, which hands
		// it whole batches, its Record serves only a failed batch's
		// records, one by one, which should not wait.
		opts = append(opts, sqlusage.WithMaxDelay(usageMaxDelay))
	}
	sink, err := sqlusage.Open(ctx, cfg.Driver, cfg.DSN, opts...)
	if err != nil {
		return fmt.Errorf("usage log (%s): %w", cfg.describe(), err)
	}
	s.sink = sink
	var next billing.UsageSink = sink
	if withLedger {
		if err := s.openLedger(ctx); err != nil {
			sink.Close()
			return err
		}
		if cfg.Spool != "" {
			s.holds = newHoldJournal(s.log)
			s.ledger = journaledLedger{ledger: s.ledger, j: s.holds}
		}
		next = billing.Settling(s.ledger, sink)
	}
	if cfg.Spool == "" {
		// Batches of up to sqlusage.DefaultMaxBatch records, each one
		// transaction; a record settles (Settling) before its batch is
		// written, and Close drains the queue, batch by batch.
		s.async = billing.NewAsync(next, billing.DeliveryOptions{
			Workers: queueWorkers, MaxBatch: sqlusage.DefaultMaxBatch, BatchWait: usageMaxDelay, Logger: s.log,
		})
		s.usage = s.async
		return nil
	}
	// The spool retries a record until the database takes it (MaxRetries
	// 0): the disk, not memory, holds records through a database outage.
	s.spool, err = billing.OpenSpool(cfg.Spool, next, billing.DeliveryOptions{Workers: spoolWorkers, Logger: s.log})
	if err != nil {
		sink.Close()
		return fmt.Errorf("usage spool: %w", err)
	}
	s.usage = s.spool
	if s.holds != nil {
		// Only now is the directory this process's (the spool locked it).
		if err := s.holds.openIn(cfg.Spool, s.ledger); err != nil {
			s.spool.Close(ctx)
			sink.Close()
			return fmt.Errorf("hold journal: %w", err)
		}
	}
	return nil
}

// closeHolds writes the hold journal a last time: the spool has delivered
// what it could, so what is open is for the next start.
func (s *server) closeHolds() {
	if s.holds != nil {
		s.holds.close()
	}
}

// buildPool turns the account entries into a static pool and the upstream
// keys of api_key accounts into credentials kept apart from the accounts,
// so that an Account can be logged or inspected without exposing a key
// (buildCredentials adds the oauth accounts).
func buildPool(accounts []AccountConfig) (*scheduler.StaticPool, scheduler.StaticKeys) {
	pool := scheduler.NewStaticPool()
	creds := make(scheduler.StaticKeys, len(accounts))
	groups := map[string][]*scheduler.Account{}
	var order []string
	for _, a := range accounts {
		if _, seen := groups[a.Group]; !seen {
			order = append(order, a.Group)
		}
		groups[a.Group] = append(groups[a.Group], &scheduler.Account{
			ID:          a.ID,
			Name:        a.ID,
			BaseURL:     a.BaseURL,
			Models:      a.Models,
			ModelMap:    a.ModelMap,
			Concurrency: a.Concurrency,
			Priority:    a.Priority,
			Weight:      a.Weight,
			WebSocket:   a.WebSocket,
			WireAPI:     a.WireAPI,
			Header:      a.header(),
			AuthHeader:  a.AuthHeader,
			Query:       a.query(),
			BodyPatch:   a.bodyPatch(),
			StreamOnly:  a.StreamOnly,
		})
		if a.APIKey != "" {
			creds[a.ID] = a.APIKey
		}
	}
	for _, g := range order {
		pool.Set(g, groups[g])
	}
	return pool, creds
}

// authenticate finds the request's key in the key ring and hands its
// Subject to the relay in the request's context (relay.WithSubject). The
// ring is a map in memory that cannot hang, so it is looked up here, on
// the request's goroutine, rather than as Handler.Authenticate, which the
// relay runs as a bounded call on a goroutine of its own. A request
// without a known key goes on without a Subject, and the relay answers it
// 401 invalid_api_key; why it was refused is logged, without the key.
func (s *server) authenticate(kr *keyring, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		subj, err := kr.authenticate(r)
		if err != nil {
			s.log.Debug("relayd: authentication failed", "remote", r.RemoteAddr, "reason", err)
			next.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r.WithContext(relay.WithSubject(r.Context(), subj)))
	})
}

func (s *server) accountEvent(ctx context.Context, e scheduler.AccountEvent) {
	if s.metrics != nil {
		s.metrics.OnAccountEvent(ctx, e)
	}
	if s.events != nil {
		// The other instances bench the account too; their
		// Scheduler.Apply does not publish it back.
		s.events.Publish(ctx, e)
	}
	attrs := []any{"account", e.AccountID, "kind", e.Kind, "status", e.Status, "reason", e.Reason}
	if !e.Until.IsZero() {
		attrs = append(attrs, "until", e.Until.Format(time.RFC3339))
	}
	level := slog.LevelWarn
	if e.Kind == scheduler.EventRecovered {
		level = slog.LevelInfo
	}
	s.log.Log(context.Background(), level, "relayd: account health changed", attrs...)
}

// accessLog logs one line per request when it ends.
func (s *server) accessLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		// The answer out first (a JSON answer has its length: this ends it
		// for the client), so that the line's formatting is not on its
		// path; net/http would flush only after this handler returned. Not
		// after a WebSocket upgrade (101: the connection is the relay's
		// now) or when nothing was written.
		if sw.code >= http.StatusOK {
			sw.FlushError()
		}
		s.access.Info("relayd: request",
			"method", r.Method,
			"path", r.URL.Path,
			"status", sw.status(),
			"duration_ms", time.Since(start).Milliseconds(),
			"request_id", w.Header().Get("X-Relay-Request-Id"),
			"remote", r.RemoteAddr)
	})
}

// Handler is everything relayd serves.
func (s *server) Handler() http.Handler { return s.handler }

// Close ends the WebSocket connections (each after its turn in flight) and
// waits for them, waits for the handlers still running (a turn whose client
// left keeps reading its upstream to learn the usage), drains the spool or
// the usage queue into the database and closes it. ctx bounds the whole;
// records the queue could not deliver by then go to the error log in full,
// those in a spool stay there for the next start.
func (s *server) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		var errs []error
		// After a timed-out shutdown this waits for the connections it cut,
		// which still drain their turns.
		if err := s.relay.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("turns or WebSocket connections still running: %w", err))
		}
		// Only now: until every handler returned, records still arrive.
		if s.spool != nil {
			if err := s.spool.Close(ctx); err != nil {
				// Nothing is lost: the next start delivers them.
				s.log.Warn("relayd: usage spool not drained", "error", err)
			}
		} else if err := s.async.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("usage queue not drained: %w", err))
		}
		s.closeHolds()
		// The queue in front has returned from every call, so the sink holds
		// at most its last batch: a write timeout is bound enough, even when
		// ctx is spent.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sqlusage.DefaultWriteTimeout)
		defer cancel()
		if err := s.sink.Shutdown(sctx); err != nil {
			errs = append(errs, fmt.Errorf("usage log: %w", err))
		}
		// Every turn has ended: no more records arrive.
		if err := s.closeConversations(); err != nil {
			errs = append(errs, fmt.Errorf("conversations: %w", err))
		}
		if err := s.closeRedis(); err != nil {
			errs = append(errs, fmt.Errorf("redis: %w", err))
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// usageLogger logs each usage record at debug level before queueing it.
type usageLogger struct {
	next billing.UsageSink
	log  *slog.Logger
}

func (u usageLogger) Record(ctx context.Context, r billing.Usage) error {
	u.log.Debug("relayd: usage",
		"request_id", r.RequestID,
		"response_id", r.ResponseID,
		"user", r.UserID,
		"api_key_id", r.APIKeyID,
		"account", r.AccountID,
		"model", r.Model,
		"status", r.Status,
		"input_tokens", r.InputTokens,
		"output_tokens", r.OutputTokens,
		"total_tokens", r.TotalTokens,
		"attempts", r.Attempts,
		"duration_ms", r.DurationMS)
	return u.next.Record(ctx, r)
}

// statusWriter remembers the status code. Unwrap lets the relay's
// http.ResponseController reach the real writer to flush SSE events.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() { w.FlushError() }

// FlushError is what http.ResponseController.Flush calls (the relay
// flushes each burst of SSE events): the writer's own flush, without a
// ResponseController of its own per call.
func (w *statusWriter) FlushError() error {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	switch f := w.ResponseWriter.(type) {
	case interface{ FlushError() error }:
		return f.FlushError()
	case http.Flusher:
		f.Flush()
		return nil
	}
	return http.NewResponseController(w.ResponseWriter).Flush() // unwraps further
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) status() int {
	if w.code == 0 {
		return http.StatusOK
	}
	return w.code
}

// writeError answers an OpenAI-shaped error with a null code.
func writeError(w http.ResponseWriter, status int, typ, msg string) {
	relay.WriteError(w, &relay.APIError{Status: status, Type: typ, Message: msg})
}
