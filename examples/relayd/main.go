// Command relayd is an OpenAI Responses API relay built on responsesrelay:
// clients call POST /v1/responses, or open the WebSocket mode on the same
// path, with a relayd key, and relayd forwards each turn to a pool of
// upstream accounts, recording usage in SQLite or PostgreSQL (optionally
// through a durable spool). Several relayd processes can share their
// limits, sticky bindings and account cooldowns through Redis.
//
// Without -config it runs a self-contained demo against an in-process fake
// upstream. examples/README.md in the repository describes the config file.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // a second signal ends the process at once
	}()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// options are the command-line flags.
type options struct {
	config          string
	addr            string
	db              string
	logLevel        slog.Level
	shutdownTimeout time.Duration
	pprof           string
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("relayd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.config, "config", "", "JSON config `file`; without it relayd runs the demo")
	fs.StringVar(&o.addr, "addr", "", "listen `address` (host:port), overriding the config's \"listen\"")
	fs.StringVar(&o.db, "db", "", "SQLite usage log `file`, overriding the config's usage.driver and usage.dsn (demo default: "+demoDBPath()+")")
	fs.TextVar(&o.logLevel, "log-level", slog.LevelInfo, "log `level`: debug, info, warn or error")
	fs.StringVar(&o.pprof, "pprof", "", "serve net/http/pprof on this `address` (host:port; keep it on loopback)")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 60*time.Second, "how long a SIGINT/SIGTERM waits for in-flight turns")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: relayd [-config file] [-addr host:port] [-db file]\n\n"+
			"Relays the OpenAI Responses API (POST /v1/responses and its WebSocket mode) to a pool of upstream accounts.\n"+
			"Without -config it runs a demo against an in-process fake upstream.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		err := fmt.Errorf("unexpected argument %q", fs.Arg(0))
		fmt.Fprintf(fs.Output(), "relayd: %v\n", err)
		fs.Usage()
		return o, err
	}
	return o, nil
}

// run is main without the process: it returns the exit code when ctx ends
// (a signal) and the server has shut down, or at once on a setup error.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	opts, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return 2
	}
	// Log lines (and setup errors, to keep their order) are written by a
	// goroutine of their own, off the requests' path (logwriter.go).
	lw := newLogWriter(stderr)
	defer lw.Close()
	stderr = lw
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: opts.logLevel}))
	// Setup errors go to stderr as plain lines: a config with several
	// problems lists one per line.
	fail := func(err error) int {
		fmt.Fprintf(stderr, "relayd: %v\n", err)
		return 1
	}

	var (
		cfg  Config
		demo *demo
	)
	if opts.config != "" {
		if cfg, err = loadConfig(opts.config); err != nil {
			return fail(err)
		}
		if opts.db != "" {
			cfg.Usage.Driver, cfg.Usage.DSN = defaultDriver, opts.db
		}
	} else {
		if demo, err = startDemo(opts.db); err != nil {
			return fail(err)
		}
		defer demo.Close()
		cfg = demo.cfg
	}
	if opts.addr != "" {
		cfg.Listen = opts.addr
	}

	srv, err := newServer(cfg, logger)
	if err != nil {
		return fail(err)
	}
	// The access lines are formatted by the log writer's goroutine.
	srv.access = slog.New(lw.deferredHandler(&slog.HandlerOptions{Level: opts.logLevel}))
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		srv.Close(context.Background())
		return fail(err)
	}
	if demo != nil {
		demo.printIntro(stdout, ln.Addr().String())
	}
	convs := cfg.Conversations
	convs.applyDefaults(cfg.Usage, cfg.Redis) // the demo's config is built in code
	attrs := []any{"addr", ln.Addr().String(), "accounts", len(cfg.Accounts),
		"api_keys", len(cfg.APIKeys), "usage_log", cfg.Usage.describe(), "conversations", convs.describe()}
	if cfg.Usage.Spool != "" {
		attrs = append(attrs, "usage_spool", cfg.Usage.Spool)
	}
	if cfg.Redis != "" {
		attrs = append(attrs, "redis", redisAddr(cfg.Redis))
	}
	if srv.ledgerKind != "" {
		attrs = append(attrs, "ledger", srv.ledgerKind)
	}
	if opts.pprof != "" {
		stopPprof, err := servePprof(opts.pprof, logger)
		if err != nil {
			ln.Close()
			srv.Close(context.Background())
			return fail(err)
		}
		defer stopPprof()
	}
	logger.Info("relayd: listening", attrs...)
	return serve(ctx, ln, srv, opts.shutdownTimeout, logger)
}

// serve answers on ln until ctx ends, then shuts down: in-flight turns,
// HTTP and WebSocket, get up to grace to finish, the spool or the usage
// queue is drained into the database, and the database is closed. It
// returns the exit code.
func serve(ctx context.Context, ln net.Listener, srv *server, grace time.Duration, logger *slog.Logger) int {
	hs := &http.Server{
		Handler:           srv.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    256 << 10,
		IdleTimeout:       2 * time.Minute,
		// No WriteTimeout: it would cut long streams.
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	// net/http runs this once the listener is closed.
	hs.RegisterOnShutdown(func() { logger.Info("relayd: no longer accepting connections") })
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()

	code := 0
	select {
	case err := <-served:
		// Serve only returns early on a listener failure.
		logger.Error("relayd: serving failed", "error", err)
		code = 1
	case <-ctx.Done():
		logger.Info("relayd: shutting down; waiting for in-flight turns", "timeout", grace)
		sctx, cancel := context.WithTimeout(context.Background(), grace)
		// http.Server.Shutdown does not wait for upgraded connections, so
		// the WebSocket ones are shut down beside it: each finishes its
		// turn in flight, then closes with 1001.
		wsDone := make(chan error, 1)
		go func() { wsDone <- srv.relay.Shutdown(sctx) }()
		if err := hs.Shutdown(sctx); err != nil {
			logger.Warn("relayd: turns still running at the shutdown timeout; closing their connections", "error", err)
			hs.Close()
		}
		if err := <-wsDone; err != nil {
			logger.Warn("relayd: WebSocket turns still running at the shutdown timeout; closing their connections", "error", err)
		}
		cancel()
		<-served
	}

	// Handlers cut by Close still drain their upstream to learn the usage
	// (up to the relay's DrainTimeout, 30 s by default), so the usage queue
	// gets that long and a little more.
	cctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	if err := srv.Close(cctx); err != nil {
		logger.Error("relayd: usage log not closed cleanly", "error", err)
		code = 1
	}
	logger.Info("relayd: stopped")
	return code
}

// servePprof serves the runtime profiles on addr, apart from the relay's
// listener, until the returned function is called.
func servePprof(addr string, logger *slog.Logger) (func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("-pprof: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(ln)
	logger.Info("relayd: serving profiles", "addr", ln.Addr().String())
	return func() { hs.Close() }, nil
}
