// Package scheduler picks the upstream account for a turn.
//
// Selection runs in three layers: an account bound to the request's
// previous_response_id (the upstream only knows a response on the account
// that produced it), an account bound to the session key, then a balanced
// choice among every eligible account. While it selects it takes the
// account's concurrency slot, so a Selection always holds one.
//
// Passive health comes from Observe: every upstream outcome the relay sees
// (429 with reset headers, 401, 5xx, connection errors, time to first token)
// moves the account's cooldown and EWMAs, which the next Select reads.
package scheduler

import (
	"context"
	"net/http"
	"path"
)

// Account is one upstream account. The scheduler never mutates an Account;
// a Pool may return new values at any time.
type Account struct {
	ID      string
	Name    string
	BaseURL string // e.g. "https://api.openai.com/v1"; requests go to BaseURL+"/responses"

	// Models the account serves; entries may use path.Match wildcards
	// ("gpt-*"). Empty means every model.
	Models []string
	// ModelMap rewrites a requested model to the upstream's name.
	ModelMap map[string]string

	Concurrency int  // in-flight turns on this account; <= 0 unlimited
	Priority    int  // lower is preferred
	Weight      int  // relative share among equals; <= 0 counts as 1
	WebSocket   bool // the upstream supports the Responses WebSocket mode

	// Header is added to every upstream request (e.g. chatgpt-account-id).
	Header http.Header
	// Meta is the host's own value.
	Meta any
}

// Serves reports whether the account serves model.
func (a *Account) Serves(model string) bool {
	if len(a.Models) == 0 {
		return true
	}
	for _, m := range a.Models {
		if m == model {
			return true
		}
		if ok, _ := path.Match(m, model); ok {
			return true
		}
	}
	return false
}

// UpstreamModel is model rewritten through ModelMap.
func (a *Account) UpstreamModel(model string) string {
	if m, ok := a.ModelMap[model]; ok && m != "" {
		return m
	}
	return model
}

// Pool lists the accounts of a group. It is called on every Select, so an
// implementation over a database should cache.
type Pool interface {
	Accounts(ctx context.Context, group string) ([]*Account, error)
}

// Credentials returns the upstream bearer token for an account.
type Credentials interface {
	Token(ctx context.Context, a *Account) (string, error)
}

// CredentialsFunc adapts a function to Credentials.
type CredentialsFunc func(ctx context.Context, a *Account) (string, error)

// Token calls f.
func (f CredentialsFunc) Token(ctx context.Context, a *Account) (string, error) { return f(ctx, a) }
