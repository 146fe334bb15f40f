package main

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/relaykit/responsesrelay/examples/relaymetrics"
	"github.com/relaykit/responsesrelay/scheduler"
)

// minAdminToken is the shortest admin token accepted: operator endpoints
// show the account pool, so a guessable token is a config error.
const minAdminToken = 16

// openMetrics registers the relay's metrics, the scheduler's account
// gauges and the process's own on a private registry.
func (s *server) openMetrics(groups []string) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m, err := relaymetrics.New(reg, relaymetrics.Options{})
	if err != nil {
		return err
	}
	if err := m.WatchScheduler(s.sched, groups...); err != nil {
		return err
	}
	s.metrics, s.registry = m, reg
	return nil
}

// adminRoutes serves GET /metrics (Prometheus text format), GET
// /debug/accounts (the scheduler's view of every account, as JSON) and GET
// /debug/keys (each key's quotas and spend, as JSON). All need
// "Authorization: Bearer <admin_token>"; without an admin_token in the
// config they answer 404, so nothing about the pool is exposed by
// default.
func (s *server) adminRoutes(mux *http.ServeMux, token string, groups []string) {
	metrics := promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{})
	mux.Handle("GET /metrics", s.admin(token, metrics))
	mux.Handle("GET /debug/accounts", s.admin(token, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.serveAccounts(w, r, groups)
	})))
	mux.Handle("GET /debug/keys", s.admin(token, http.HandlerFunc(s.serveKeys)))
}

// admin checks the admin token in constant time before next runs.
func (s *server) admin(token string, next http.Handler) http.Handler {
	want := sha256.Sum256([]byte(token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if token == "" {
			writeError(w, http.StatusNotFound, "invalid_request_error",
				"Not found: set admin_token in the config to enable "+r.URL.Path)
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || got == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="relayd admin"`)
			writeError(w, http.StatusUnauthorized, "authentication_error", "Admin token required")
			return
		}
		// Comparing digests keeps the time independent of the token's
		// length and content.
		if h := sha256.Sum256([]byte(got)); subtle.ConstantTimeCompare(h[:], want[:]) != 1 {
			s.log.Warn("relayd: admin request with a wrong token", "path", r.URL.Path, "remote", r.RemoteAddr)
			writeError(w, http.StatusForbidden, "permission_error", "Invalid admin token")
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

// accountsView is the JSON of /debug/accounts.
type accountsView struct {
	Time     time.Time                `json:"time"`
	Accounts []scheduler.AccountState `json:"accounts"`
}

func (s *server) serveAccounts(w http.ResponseWriter, r *http.Request, groups []string) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	// Listing each group through the pool shows accounts that have not
	// served a turn yet; Snapshot then merges them with their groups.
	for _, g := range groups {
		if _, err := s.sched.SnapshotGroup(ctx, g); err != nil {
			writeError(w, http.StatusServiceUnavailable, "server_error", "Listing group "+g+" failed")
			return
		}
	}
	v := accountsView{Time: time.Now().UTC(), Accounts: s.sched.Snapshot()}
	if v.Accounts == nil {
		v.Accounts = []scheduler.AccountState{}
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// configGroups lists the groups of the configured accounts, sorted.
func configGroups(accounts []AccountConfig) []string {
	var gs []string
	for _, a := range accounts {
		if !slices.Contains(gs, a.Group) {
			gs = append(gs, a.Group)
		}
	}
	slices.Sort(gs)
	return gs
}
