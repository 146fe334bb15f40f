package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/examples/sqlusage"
	"github.com/relaykit/responsesrelay/relay"
	"github.com/relaykit/responsesrelay/scheduler"
	"github.com/relaykit/responsesrelay/wsproxy"
)

// server is relayd without its listener: tests serve handler over
// httptest, main over an http.Server.
type server struct {
	handler http.Handler
	relay   *relay.Handler
	ws      *wsproxy.Handler
	sched   *scheduler.Scheduler
	usage   *billing.Async
	sink    *sqlusage.Sink
	log     *slog.Logger

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
	pool, creds := buildPool(cfg.Accounts)
	s := &server{log: logger}
	s.sched = &scheduler.Scheduler{
		Pool:           pool,
		Logger:         logger,
		OnAccountEvent: s.accountEvent,
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.sink, err = sqlusage.OpenSQLite(ctx, cfg.Usage.DSN)
	if err != nil {
		return nil, fmt.Errorf("usage log: %w", err)
	}
	s.usage = billing.NewAsync(s.sink, billing.AsyncOptions{Logger: logger})

	s.relay = &relay.Handler{
		Scheduler:    s.sched,
		Credentials:  creds,
		Usage:        usageLogger{next: s.usage, log: logger},
		Authenticate: s.authenticator(kr),
		Logger:       logger,
	}
	// Both transports on one path: WebSocket upgrades (authenticated
	// before the upgrade) to the WebSocket mode, the rest to the relay,
	// which answers POST and gives a plain GET 426.
	s.ws = &wsproxy.Handler{Relay: s.relay, MaxConnsPerKey: cfg.WSMaxConnsPerKey}
	mux := http.NewServeMux()
	mux.Handle("/v1/responses", s.ws)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "invalid_request_error",
			"Invalid URL ("+r.Method+" "+r.URL.Path+"): relayd serves /v1/responses (POST, or GET with a WebSocket upgrade)")
	})
	s.handler = s.accessLog(mux)
	return s, nil
}

// buildPool turns the account entries into a static pool and the upstream
// keys into credentials kept apart from the accounts, so that an Account
// can be logged or inspected without exposing a key.
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
			Header:      a.header(),
		})
		creds[a.ID] = a.APIKey
	}
	for _, g := range order {
		pool.Set(g, groups[g])
	}
	return pool, creds
}

// authenticator logs why a request was refused, without the key.
func (s *server) authenticator(kr *keyring) func(*http.Request) (*relay.Subject, error) {
	return func(r *http.Request) (*relay.Subject, error) {
		subj, err := kr.authenticate(r)
		if err != nil {
			s.log.Debug("relayd: authentication failed", "remote", r.RemoteAddr, "reason", err)
		}
		return subj, err
	}
}

func (s *server) accountEvent(_ context.Context, e scheduler.AccountEvent) {
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
		s.log.Info("relayd: request",
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
// left keeps reading its upstream to learn the usage), drains the usage
// queue into SQLite and closes the database. ctx bounds the whole; records
// that could not be written by then go to the error log in full.
func (s *server) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		var errs []error
		// After a timed-out shutdown this waits for the connections it cut,
		// which still drain their turns.
		if err := s.ws.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("WebSocket connections still open: %w", err))
		}
		if err := s.relay.Wait(ctx); err != nil {
			errs = append(errs, fmt.Errorf("handlers still running: %w", err))
		}
		if err := s.usage.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("usage queue not drained: %w", err))
		}
		if err := s.sink.Close(); err != nil {
			errs = append(errs, fmt.Errorf("usage log: %w", err))
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

func (w *statusWriter) Flush() {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	http.NewResponseController(w.ResponseWriter).Flush()
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
