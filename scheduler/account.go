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
//
// # Turn lifecycle
//
// For each turn the relay calls Select, sends the turn to the Selection's
// account, reports what happened with Observe, calls Bind when the turn
// completed (so the next turn of the conversation finds the same account),
// and finally Release. On a failure before any output reached the client it
// adds the account to Request.Exclude and selects again.
//
// # Stickiness
//
// Bindings live in a Store for Scheduler.StickyTTL (1 h). A binding is a
// preference, never a trap: an account that is cooling down, failing, slow,
// full, excluded, gone from the group, or no longer serves the model is
// skipped, and the next Bind moves the binding to whichever account served
// the turn. One exception: an account bound to the request's
// previous_response_id that is merely full is waited for (bounded by
// AccountWait, when Request.Wait is set), because no other account knows
// that response and would answer previous_response_not_found.
//
// A response is also bound to the API key that created it (Request.APIKeyID),
// for Scheduler.OwnerTTL (30 days): Select refuses its id to any other key
// with ErrResponseNotOwned, so that knowing a response id is not enough to
// continue someone else's conversation.
//
// # Balancing
//
// Among the accounts that serve the model and transport and are not cooling
// down, those of a lower Priority are always tried first; within a priority
// the lowest score (load, error rate, latency) goes first; among equals
// Weight sets the share.
// Select touches no Store when a request has neither previous_response_id
// nor session key, allocates little more than the Selection, and walks a
// cached view of the pool, so it stays within tens of microseconds for
// 10 000 accounts.
//
// # Health
//
// Cooldowns follow the upstream's own signals (Retry-After, rate-limit
// reset headers, codex usage windows) and fixed terms for credential,
// billing and overload errors; see Scheduler.Observe for the table. A
// cooling account gets no new turns until the cooldown ends. Every change
// is reported through Scheduler.OnAccountEvent, and Scheduler.Snapshot
// shows every account's load, cooldown and averages at once, for an
// operator page or a health endpoint.
package scheduler

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"path"
)

// Account is one upstream account. The scheduler never mutates an Account;
// a Pool may return new values at any time.
type Account struct {
	ID      string
	Name    string
	BaseURL string // e.g. "https://api.openai.com/v1"; requests go to BaseURL+"/responses"
	// WireAPI is the API the upstream speaks: "" or "responses" (the
	// Responses API), or "chat" (Chat Completions at
	// BaseURL+"/chat/completions"; the relay translates each turn and its
	// answer, and serves previous_response_id from its own records, since
	// such an upstream keeps no state). A chat account has no WebSocket
	// mode: WebSocket is ignored.
	WireAPI string

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
	// AuthHeader names the header that carries the account's token: ""
	// sends "Authorization: Bearer <token>"; any other name carries the
	// bare token (Azure OpenAI's "api-key").
	AuthHeader string
	// Query is added to every upstream URL (Azure OpenAI's api-version).
	Query url.Values
	// BodyPatch sets or removes fields of every request body the account
	// receives, after the relay has validated and shaped it (for a chat
	// account: the Chat Completions body). A key is a dotted path
	// ("store", "reasoning.summary"); its value is the JSON to set there,
	// and an empty value removes the field. Keys apply in sorted order.
	// The fields the relay routes by (model, stream, input, ...) cannot be
	// patched: see relay.CheckBodyPatch, which the relay also applies to
	// every attempt.
	BodyPatch map[string]json.RawMessage
	// StreamOnly: the upstream accepts only streaming requests. A client
	// that did not ask for a stream is served by streaming upstream and
	// answered with the object the terminal event carried.
	StreamOnly bool
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

// upstreamModel is model rewritten through ModelMap.
func (a *Account) upstreamModel(model string) string {
	if m, ok := a.ModelMap[model]; ok && m != "" {
		return m
	}
	return model
}

// Pool lists the accounts of a group. It is called on every Select, so an
// implementation over a database should cache.
//
// The Scheduler caches facts about each account (models, weight, priority,
// concurrency) for as long as the Pool keeps returning the same *Account
// pointers. To change an account, return a new *Account rather than
// modifying one already returned, and never modify a slice after returning
// it. Returning the same slice while nothing changed keeps Select fast.
type Pool interface {
	Accounts(ctx context.Context, group string) ([]*Account, error)
}

// Credentials returns the upstream bearer token for an account. A
// Credentials whose tokens can be renewed also implements Refresher.
type Credentials interface {
	Token(ctx context.Context, a *Account) (string, error)
}

// CredentialsFunc adapts a function to Credentials.
type CredentialsFunc func(ctx context.Context, a *Account) (string, error)

// Token calls f.
func (f CredentialsFunc) Token(ctx context.Context, a *Account) (string, error) { return f(ctx, a) }
