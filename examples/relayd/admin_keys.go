package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"time"

	"github.com/relaykit/responsesrelay/billing"
)

// keyInfo is what /debug/keys shows of a configured key: never the key,
// only its id.
type keyInfo struct {
	id, user, group string
	limits          billing.Limits
}

// keyInfos lists the keys of a validated config, in config order.
func keyInfos(keys []APIKeyConfig) []keyInfo {
	out := make([]keyInfo, 0, len(keys))
	for _, k := range keys {
		lim, _ := k.limits("") // validated: no errors
		out = append(out, keyInfo{id: keyID(sha256.Sum256([]byte(k.Key))), user: k.UserID, group: k.Group, limits: lim})
	}
	return out
}

// keysView is the JSON of /debug/keys.
type keysView struct {
	Time time.Time `json:"time"`
	// Ledger is where spend and holds are kept: "redis", "sqlite" or
	// "postgres"; "" when no key has a quota, and nothing is held.
	Ledger string    `json:"ledger"`
	Keys   []keyView `json:"keys"`
}

// keyView is one key: its quotas and, with a ledger, its balance in the
// current budget period.
type keyView struct {
	APIKeyID string `json:"api_key_id"`
	UserID   string `json:"user_id"`
	Group    string `json:"group"`
	// BudgetMicros is the budget per Period; 0: none. RPM and TPM: 0,
	// none.
	BudgetMicros int64  `json:"budget_micros"`
	Period       string `json:"period"`
	RPM          int64  `json:"rpm"`
	TPM          int64  `json:"tpm"`
	// The balance, with a ledger: Window is the current period ("total",
	// "2026-12-04", "2026-12"), SpentMicros what it spent, HeldMicros and
	// Holds what the turns in flight hold, RemainingMicros the budget less
	// both (null without a budget).
	Window          string `json:"window,omitempty"`
	SpentMicros     *int64 `json:"spent_micros,omitempty"`
	HeldMicros      *int64 `json:"held_micros,omitempty"`
	Holds           *int64 `json:"holds,omitempty"`
	RemainingMicros *int64 `json:"remaining_micros"`
}

func (s *server) serveKeys(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	now := time.Now().UTC()
	v := keysView{Time: now, Ledger: s.ledgerKind, Keys: make([]keyView, 0, len(s.keys))}
	for _, k := range s.keys {
		kv := keyView{APIKeyID: k.id, UserID: k.user, Group: k.group, BudgetMicros: k.limits.BudgetMicros,
			Period: k.limits.Period, RPM: k.limits.RPM, TPM: k.limits.TPM}
		if kv.Period == "" {
			kv.Period = billing.PeriodTotal
		}
		if s.ledger != nil {
			b, err := s.ledger.Balance(ctx, k.id, k.limits, now)
			if err != nil {
				s.log.Error("relayd: reading a key's balance failed", "api_key_id", k.id, "error", err)
				writeError(w, http.StatusServiceUnavailable, "server_error", "Reading the ledger failed")
				return
			}
			kv.Window = b.Period
			kv.SpentMicros, kv.HeldMicros, kv.Holds = &b.SpentMicros, &b.HeldMicros, &b.Holds
			if b.RemainingMicros >= 0 {
				kv.RemainingMicros = &b.RemainingMicros
			}
		}
		v.Keys = append(v.Keys, kv)
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
