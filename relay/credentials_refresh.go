package relay

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/relaykit/responsesrelay/scheduler"
)

// A rejected token is renewed once (scheduler.Refresher): an upstream 401
// on an account whose Credentials can refresh is not reported to the
// scheduler at once; the relay asks for a new token and sends the same
// request again, once, on the same account (the same Selection and slot,
// a second attempt of the turn). Only when the renewal fails, or the
// renewed token is refused too, is the 401 reported, and the account cools
// down with the reason in its detail. A 401 answered by a renewal and a
// served retry costs the account nothing.
//
// Concurrent 401s of one account for the same rejected token share one
// Refresh (singleflight, keyed by account and token; the key is never
// logged). The shared call runs on a context detached from any one
// turn's, so a client that leaves does not fail the renewal the others
// wait for, bounded by HookTimeout as Token is; each caller waits for it
// at most until its own context ends.

var (
	errRefreshSame    = errors.New("Refresh returned no new token")
	errRenewedRefused = errors.New("the renewed token was rejected too")
)

// turnRenew is a turn's renewal of its account's token, written by
// tryRenewing: token is the renewed token the retry uses (credentials),
// retry that the retry runs (a 401 now is final).
type turnRenew struct {
	token string
	retry bool
}

// tryRenewing runs an attempt on sel and, when the upstream rejected the
// token and the Credentials renewed it, the same attempt once more.
// began is when the current attempt began: the Observer gets the rejected
// attempt (an AttemptFailover of status 401) and the retry's start.
func (t *turn) tryRenewing(sel *scheduler.Selection, began *time.Time) *attemptError {
	ae := t.try(sel)
	if ae == nil || !ae.renew {
		return ae
	}
	ae.renew = false
	acct, rejected := sel.Account, t.up.token
	r, _ := t.h.Credentials.(scheduler.Refresher) // ae.renew: it is one
	token, err := t.h.refresh(t.ctx, r, acct, rejected)
	if err != nil {
		if t.ctx.Err() == nil {
			t.h.renewFailed(acct, ae.header, ae.body, rejected, err, t.in.id)
		}
		// A client gone while it waited says nothing about the account.
		return ae
	}
	if t.observing() {
		t.observeAttempt(sel, *began, ae, AttemptFailover)
		*began = t.h.now()
	}
	t.h.log.Info("relay: retrying on the same account with renewed credentials", "request_id", t.in.id, "account", acct.ID)
	t.renew = turnRenew{token: token, retry: true}
	defer func() { t.renew = turnRenew{} }()
	return t.try(sel)
}

// rejected decides what a failed attempt's status means for renewal:
// hold reports a 401 held back for tryRenewing (not observed: it may cost
// the account nothing); why is the detail of a 401 observed after a
// renewal.
func (t *turn) rejected(ae *attemptError) (hold bool, why error) {
	if ae.status != http.StatusUnauthorized {
		return false, nil
	}
	if t.renew.retry {
		return false, errRenewedRefused
	}
	if _, ok := t.h.Credentials.(scheduler.Refresher); ok {
		ae.renew = true
		return true, nil
	}
	return false, nil
}

// renewedToken is the token renewed for the retry, "" when none.
func (t *turn) renewedToken() string { return t.renew.token }

// renewCall renews the token of a call outside a turn (callAccount) that
// was answered 401: ok reports a new token to send the call again with.
// A failed renewal is observed as the turn's would be.
func (h *Handler) renewCall(ctx context.Context, acct *scheduler.Account, rejected string, resp *http.Response) (string, bool) {
	r, ok := h.Credentials.(scheduler.Refresher)
	if !ok {
		return "", false
	}
	token, err := h.refresh(ctx, r, acct, rejected)
	if err != nil {
		if ctx.Err() == nil {
			h.renewFailed(acct, resp.Header, nil, rejected, err, "")
		}
		return "", false
	}
	h.log.Info("relay: calling the account again with renewed credentials", "account", acct.ID)
	return token, true
}

// refresh is r's new token for acct in place of rejected: one call per
// account and rejected token at a time, shared by every caller, bounded by
// HookTimeout on a context no caller's end cancels. Each caller waits at
// most until ctx ends.
func (h *Handler) refresh(ctx context.Context, r scheduler.Refresher, acct *scheduler.Account, rejected string) (string, error) {
	// The key holds the token: it is never logged.
	ch := h.renewals.DoChan(acct.ID+"\x00"+rejected, func() (any, error) {
		var got string // written by the hook; read only if it was not abandoned
		err := h.bounded(context.WithoutCancel(ctx), func(ctx context.Context) error {
			var err error
			got, err = r.Refresh(ctx, acct, rejected)
			return err
		})
		if err != nil {
			return "", err
		}
		if got == "" || got == rejected {
			return "", errRefreshSame
		}
		return got, nil
	})
	h.renewWaiting.Add(1)
	defer h.renewWaiting.Add(-1)
	select {
	case res := <-ch:
		if res.Err != nil {
			return "", res.Err
		}
		return res.Val.(string), nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// renewFailed reports a 401 whose token could not be renewed: the
// account cools down with the reason as its detail, masked like an
// upstream body (the host's error may quote the rejected token).
func (h *Handler) renewFailed(acct *scheduler.Account, header http.Header, body []byte, rejected string, err error, requestID string) {
	why := errors.New("credential refresh failed: " + string(sanitize([]byte(err.Error()), rejected)))
	attrs := []any{"account", acct.ID, "error", why.Error()}
	if requestID != "" {
		attrs = append([]any{"request_id", requestID}, attrs...)
	}
	h.log.Error("relay: renewing the credentials of an account failed", attrs...)
	h.observe(acct.ID, scheduler.Outcome{Kind: scheduler.OutcomeStatus, Status: http.StatusUnauthorized, Header: header, Body: body, Err: why})
}
