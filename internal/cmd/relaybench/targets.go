package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/conversation"
	"github.com/relaykit/responsesrelay/internal/h1"
	"github.com/relaykit/responsesrelay/relay"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/relaykit/responsesrelay/scheduler"
)

// Target names, in the order they run and print.
const (
	targetDirect       = "direct"
	targetReverseProxy = "reverseproxy"
	targetRelay        = "relay"
)

var allTargets = []string{targetDirect, targetReverseProxy, targetRelay}

const (
	numAccounts = 10
	// upstreamKey is what the fake upstream accepts; clients of direct and
	// reverseproxy send it themselves, the relay sends it from Credentials.
	upstreamKey = "sk-bench-upstream"
	// relayKey is the one key the relay's Authenticate accepts.
	relayKey = "rk-bench"
	// limitedAccount answers 429 to every request in the failover workload.
	limitedAccount = "acct-429"
	benchGroup     = "bench"
)

// healthyAccounts are the accounts that answer normally.
func healthyAccounts(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("acct-%d", i)
	}
	return names
}

// endpoint is one target, ready for a run: where clients send requests and
// how it is torn down.
type endpoint struct {
	name string
	// httpURLs and wsURLs are the URLs clients use, spread over accounts
	// where the target cannot choose an account itself.
	httpURLs, wsURLs []string
	auth             http.Header
	// attempts counts the relay's upstream HTTP attempts; nil elsewhere.
	attempts *countingTransport
	// chat: clients speak Chat Completions (chat-stream's direct and
	// reverseproxy).
	chat bool
	// pid is the process serving the target, when it is a child process
	// (end-to-end mode); 0 when it is this process or the upstream.
	pid   int
	close func()
}

// setup is the upstream of one run and the accounts the targets use.
type setup struct {
	workload workload
	// url is the upstream's root URL, like "http://127.0.0.1:41234".
	url string
	// direct lists the accounts that direct and reverseproxy clients spread
	// over: only healthy ones, since neither can fail over.
	direct []string
	// relayAccounts is the relay's pool.
	relayAccounts []string
	// pid is the upstream's process when it is a child, else 0.
	pid   int
	close func()
}

// newSetup starts a fake upstream for workload w, in this process or, with
// proc, in a child process (this binary again) whose goroutines do not
// share this process's scheduler. With pace > 0 the streamed workloads'
// events are paced and stamped.
func newSetup(w workload, deltas int, pace time.Duration, proc *childConfig) (*setup, error) {
	if proc != nil {
		return newChildSetup(w, deltas, pace, proc)
	}
	up := relaytest.NewServer()
	configureUpstream(up.Upstream, w, deltas, pace)
	s := &setup{workload: w, url: up.URL, close: up.Close}
	s.direct, s.relayAccounts = accountsFor(w)
	return s, nil
}

// accountsFor returns, for workload w, the accounts that direct and
// reverseproxy clients spread over (only healthy ones: neither can fail
// over) and the relay's pool, which in the failover workload has one
// account in ten (acct-429) answering 429 to everything.
func accountsFor(w workload) (direct, relayAccounts []string) {
	healthy := healthyAccounts(numAccounts)
	if w != wlFailover {
		return healthy, healthy
	}
	return healthy[:numAccounts-1], append(healthy[:numAccounts-1:numAccounts-1], limitedAccount)
}

// configureUpstream sets up the fake's accounts for workload w: the same
// step for every healthy one, and 429s for acct-429.
func configureUpstream(up *relaytest.Upstream, w workload, deltas int, pace time.Duration) {
	up.NoLog = true // the logs would grow for the whole run
	// For chat-stream the same deltas make the relay's Responses stream
	// as long as stream's, and the chat stream 4 data: lines shorter.
	step := relaytest.Step{Deltas: deltas, EventInterval: pace}
	if pace > 0 {
		step.Events = "stamp"
	}
	if w == wlJSON {
		step = relaytest.Step{} // the fake's default: 5 deltas of output text
	}
	for _, a := range healthyAccounts(numAccounts) {
		up.SetKey(a, upstreamKey)
		up.SetDefault(a, step)
	}
	if w == wlFailover {
		up.SetKey(limitedAccount, upstreamKey)
		up.SetDefault(limitedAccount, relaytest.Step{Status: http.StatusTooManyRequests})
	}
}

// baseURL is an account's base URL on the upstream (relaytest's layout).
func (s *setup) baseURL(account string) string {
	return s.url + "/" + url.PathEscape(account) + "/v1"
}

func (s *setup) wsURL(account string) string { return wsScheme(s.baseURL(account)) + "/responses" }

// clientPath is what direct and reverseproxy clients post to under an
// account's base URL.
func (s *setup) clientPath() string {
	if s.chat() {
		return "/chat/completions"
	}
	return "/responses"
}

// chat reports whether the upstream speaks Chat Completions to the relay.
func (s *setup) chat() bool { return s.workload == wlChatStream }

func bearer(key string) http.Header {
	return http.Header{"Authorization": {"Bearer " + key}}
}

func wsScheme(u string) string { return "ws" + strings.TrimPrefix(u, "http") }

// newDirect sends clients straight to the upstream.
func newDirect(s *setup) *endpoint {
	e := &endpoint{name: targetDirect, auth: bearer(upstreamKey), chat: s.chat(), close: func() {}}
	for _, a := range s.direct {
		e.httpURLs = append(e.httpURLs, s.baseURL(a)+s.clientPath())
		e.wsURLs = append(e.wsURLs, s.wsURL(a))
	}
	return e
}

// newReverseProxy is httputil.ReverseProxy with FlushInterval -1 in front
// of the upstream, on its own loopback server, sharing the relay's default
// transport settings. The inbound body is read into memory and sent as a
// bytes.Reader: a proxy handed the inbound r.Body truncates some SSE
// streams under keep-alive load (ARCHITECTURE.md), and the relay buffers the
// body too. WebSocket upgrades pass through the proxy's own upgrade
// support: after the 101 it copies bytes both ways.
func newReverseProxy(s *setup) *endpoint {
	h, tr := reverseProxyHandler(s.url)
	srv := httptest.NewServer(h)
	e := reverseProxyEndpoint(s, srv.URL)
	e.close = func() {
		srv.Close()
		tr.CloseIdleConnections()
	}
	return e
}

// reverseProxyEndpoint is the reverseproxy target served at root (like
// "http://127.0.0.1:41234"), with clients spread over the healthy accounts.
func reverseProxyEndpoint(s *setup, root string) *endpoint {
	e := &endpoint{name: targetReverseProxy, auth: bearer(upstreamKey), chat: s.chat()}
	for _, a := range s.direct {
		path := "/" + url.PathEscape(a) + "/v1"
		e.httpURLs = append(e.httpURLs, root+path+s.clientPath())
		e.wsURLs = append(e.wsURLs, wsScheme(root)+path+"/responses")
	}
	return e
}

// reverseProxyHandler is the reverseproxy target's handler in front of the
// upstream at upstream, and its transport (to close idle connections).
func reverseProxyHandler(upstream string) (http.Handler, *http.Transport) {
	upURL, err := url.Parse(upstream)
	if err != nil {
		panic(err)
	}
	tr := relay.NewTransport()
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(upURL)
		},
		FlushInterval: -1,
		Transport:     tr,
		ErrorLog:      log.New(io.Discard, "", 0),
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		r.Body.Close()
		if err != nil {
			http.Error(w, "reading body: "+err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		rp.ServeHTTP(w, r)
	})
	return h, tr
}

// relayOptions are the knobs newRelay sets beyond the in-memory defaults.
// noRecords turns the relay's conversation records off (-no-records).
var noRecords bool

type relayOptions struct {
	accountConcurrency int
	transport          http.RoundTripper // nil: the relay's default (h1.New(relay.NewTransport()))
	streamIdle         time.Duration     // 0: the relay's default
	wireAPI            string            // the accounts' scheduler.Account.WireAPI
}

// newRelayHandler is a relay.Handler over the given accounts with
// in-memory defaults: a static pool and keys, one accepted bearer key whose
// subject has no concurrency limit, usage discarded, logs discarded.
func newRelayHandler(baseURL func(account string) string, accounts []string, o relayOptions) (*relay.Handler, *countingTransport) {
	pool := scheduler.NewStaticPool()
	keys := scheduler.StaticKeys{}
	for _, a := range accounts {
		pool.Add(benchGroup, &scheduler.Account{ID: a, Name: a, BaseURL: baseURL(a),
			Concurrency: o.accountConcurrency, WebSocket: o.wireAPI != "chat", WireAPI: o.wireAPI})
		keys[a] = upstreamKey
	}
	discard := slog.New(slog.DiscardHandler)
	// The relay's default transport, wrapped to count attempts.
	var tr http.RoundTripper = h1.New(relay.NewTransport())
	if o.transport != nil {
		tr = o.transport
	}
	ct := &countingTransport{rt: tr}
	subject := &relay.Subject{UserID: "bench-user", APIKeyID: "bench-key", GroupID: benchGroup}
	h := &relay.Handler{
		Scheduler:   &scheduler.Scheduler{Pool: pool, Logger: discard},
		Credentials: keys,
		Transport:   ct,
		Logger:      discard,
		Authenticate: func(r *http.Request) (*relay.Subject, error) {
			if r.Header.Get("Authorization") != "Bearer "+relayKey {
				return nil, nil // 401
			}
			return subject, nil
		},
		StreamIdleTimeout: o.streamIdle,
	}
	if noRecords {
		h.Conversations = &conversation.Memory{MaxBytes: -1}
	}
	if withMoney {
		// Every model priced, a budget and rate limits no run reaches: the
		// cost of pricing, holding and settling each turn, not of refusals.
		prices, err := billing.NewPrices(map[string]billing.Price{"*": {Input: 1_250_000, CachedInput: 125_000, Output: 10_000_000}}, nil)
		if err != nil {
			panic(err)
		}
		ledger := &billing.MemoryLedger{}
		h.Prices, h.Ledger, h.Usage = prices, ledger, billing.Settling(ledger, nil)
		subject.KeyLimits = billing.Limits{BudgetMicros: math.MaxInt64 / 4, Period: billing.PeriodDay, RPM: math.MaxInt64 / 4, TPM: math.MaxInt64 / 4}
		subject.UserLimits = subject.KeyLimits
	}
	return h, ct
}

// withMoney turns on prices, an in-memory ledger with quotas on the
// bench key, and settlement of each record (-money).
var withMoney bool

// newRelay mounts the relay and its WebSocket mode on one path, as a host
// would, on a loopback server. Each account has room for 1000 turns, so
// the scheduler never throttles.
func newRelay(s *setup) *endpoint {
	o := relayOptions{accountConcurrency: 1000}
	if s.chat() {
		o.wireAPI = "chat"
	}
	h, ct := newRelayHandler(s.baseURL, s.relayAccounts, o)
	// One key opens a connection per client (-concurrency of them): no cap
	// on connections per key, which would refuse most of them. Handshakes
	// go through http.DefaultTransport: the relay's Transport is wrapped
	// to count attempts.
	h.WebSocket = &relay.WebSocketOptions{MaxConnsPerKey: -1}
	mux := http.NewServeMux()
	mux.Handle("/v1/responses", h)
	srv := httptest.NewServer(mux)
	e := &endpoint{name: targetRelay, auth: bearer(relayKey), attempts: ct,
		httpURLs: []string{srv.URL + "/v1/responses"},
		wsURLs:   []string{wsScheme(srv.URL) + "/v1/responses"},
	}
	e.close = func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		h.Shutdown(ctx)
		srv.Close()
		h.CloseIdleConnections()
	}
	return e
}

func newEndpoint(target string, s *setup) *endpoint {
	switch target {
	case targetDirect:
		return newDirect(s)
	case targetReverseProxy:
		return newReverseProxy(s)
	case targetRelay:
		return newRelay(s)
	}
	panic("unknown target " + target)
}

// countingTransport counts the relay's upstream attempts and 429 answers,
// to show how often failover went to the 429ing account.
type countingTransport struct {
	rt              http.RoundTripper
	attempts, r429s atomic.Int64
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.rt.RoundTrip(r)
	c.attempts.Add(1)
	if err == nil && resp.StatusCode == http.StatusTooManyRequests {
		c.r429s.Add(1)
	}
	return resp, err
}

func (c *countingTransport) CloseIdleConnections() {
	if ci, ok := c.rt.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}
