package relay

import (
	"context"
	"errors"
	"fmt"
	"github.com/relaykit/responsesrelay/billing"
	"net/http"
	"time"

	"github.com/relaykit/responsesrelay/internal/hookcall"
)

// Subject is the authenticated caller of a turn: who pays, which key, which
// group of accounts serves it, and how many turns it may run at once.
type Subject struct {
	UserID   string
	APIKeyID string // namespaces sticky sessions; never the key itself
	GroupID  string // the scheduler group; "" is the group named ""
	// Concurrency is how many turns the user may have in flight; <= 0 is
	// unlimited.
	Concurrency int
	// Meta is the host's own value, handed to the billing gate.
	Meta any
	// KeyLimits and UserLimits are the key's and the user's quotas, for
	// Handler.Ledger (billing.Request carries them); zero: unlimited.
	KeyLimits, UserLimits billing.Limits
}

type subjectKey struct{}

// WithSubject returns a context carrying s, for hosts that authenticate in
// their own middleware before the Handler.
func WithSubject(ctx context.Context, s *Subject) context.Context {
	return context.WithValue(ctx, subjectKey{}, s)
}

// SubjectFrom returns the subject stored by WithSubject.
func SubjectFrom(ctx context.Context) (*Subject, bool) {
	s, ok := ctx.Value(subjectKey{}).(*Subject)
	return s, ok && s != nil
}

// subject authenticates a WebSocket upgrade as ServeHTTP authenticates a
// POST; on an error, authAnswer gives the client's answer.
func (h *Handler) subject(r *http.Request) (*Subject, error) {
	return h.authenticate(r, nil)
}

var errInvalidAPIKey = &APIError{Status: http.StatusUnauthorized, Type: "authentication_error", Message: "Invalid API key", Code: "invalid_api_key"}

// authAnswer is the client's answer for an error of authenticate.
func authAnswer(err error) *APIError {
	if ae, ok := errors.AsType[*APIError](err); ok {
		return ae
	}
	return errInvalidAPIKey
}

// authenticate runs Authenticate bounded, on the turn's runner when there
// is one. Its error always carries an *APIError (see Subject).
func (h *Handler) authenticate(r *http.Request, hooks *hookcall.Runner) (*Subject, error) {
	if h.Authenticate == nil {
		if s, _ := SubjectFrom(r.Context()); s != nil {
			return s, nil
		}
		return nil, errInvalidAPIKey
	}
	var s *Subject
	var err error
	if hooks != nil {
		err = hooks.Call(r.Context(), h.hookTimeout(), func(context.Context) error {
			var err error
			s, err = h.Authenticate(r)
			return err
		}, nil, nil, 0)
	} else {
		// Outside a turn: the hook's context carries the bound.
		err = hookcall.Bounded(r.Context(), h.hookTimeout(), func(ctx context.Context) error {
			var err error
			s, err = h.Authenticate(r.WithContext(ctx))
			return err
		}, nil)
	}
	err = hookErr(err)
	p, isPanic := errors.AsType[*hookcall.PanicError](err)
	switch {
	case isPanic:
		h.log.Error("relay: Authenticate panicked", "panic", fmt.Sprint(p.Value))
		return nil, errInvalidAPIKey
	case errors.Is(err, ErrHookTimeout):
		h.log.Error("relay: Authenticate did not return in time; answering 503", "timeout", h.hookTimeout())
		return nil, fmt.Errorf("relay: Authenticate: %w: %w", &APIError{Status: http.StatusServiceUnavailable, Type: "server_error",
			Message: "Authentication service unavailable, please retry later", RetryAfter: time.Second}, err)
	case r.Context().Err() != nil:
		return nil, fmt.Errorf("%w: %w", errInvalidAPIKey, r.Context().Err())
	case err != nil:
		if _, ok := errors.AsType[*APIError](err); !ok {
			// Debug: refusing strangers' keys is routine; a host that
			// wants outages seen returns an *APIError (503) and logs.
			h.log.Debug("relay: Authenticate refused the request", "error", err)
			return nil, fmt.Errorf("%w: %w", errInvalidAPIKey, err)
		}
		return nil, err
	case s == nil:
		return nil, errInvalidAPIKey
	}
	return s, nil
}
