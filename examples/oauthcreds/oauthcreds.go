// Package oauthcreds gives a relay the upstream tokens of accounts that
// authenticate with OAuth 2.0 refresh tokens, on golang.org/x/oauth2.
//
// A Source is a scheduler.Refresher: set it as relay.Handler.Credentials
// (or dispatch to it per account). Token returns an account's access
// token while it stays valid for more than Margin and refreshes it
// otherwise, so a token is renewed ahead of its expiry; Refresh renews a
// token an upstream refused (answered 401) before its time. Either way an
// account has at most one token request in flight, whoever asks: turns
// that need a token while it is being refreshed wait for that refresh and
// share its result.
//
// Token endpoints that rotate refresh tokens answer a refresh with a new
// one and may refuse the old one from then on. The Source calls OnRotate
// with the new refresh token, and uses the access token that came with it
// only once OnRotate has stored it: a rotated refresh token that could not
// be stored is not silently lost (the refresh fails, and the next one
// tries to store it again before anything else).
//
// Errors name the account, the token endpoint's status and its RFC 6749
// error code, or the transport failure; never a token, nor the endpoint's
// answer, which may quote one.
package oauthcreds

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/sync/singleflight"

	"github.com/relaykit/responsesrelay/scheduler"
)

// Defaults of zero Source fields.
const (
	DefaultMargin         = 60 * time.Second
	DefaultRequestTimeout = 30 * time.Second
)

// Account is one account's OAuth client and its refresh token.
type Account struct {
	// Config is the OAuth client: ClientID, ClientSecret (optional) and
	// Endpoint.TokenURL. An Endpoint.AuthStyle of AuthStyleAutoDetect (0)
	// is taken as AuthStyleInParams without a ClientSecret and
	// AuthStyleInHeader with one, so that a refused refresh costs one
	// request, not one per style. RedirectURL and Scopes are not used.
	Config oauth2.Config
	// RefreshToken is the refresh token to start from, as last stored.
	RefreshToken string
	// Token, if set, is an access token known to be current (with its
	// Expiry); nil: the first Token call refreshes.
	Token *oauth2.Token
}

// Source is the tokens of a set of OAuth accounts. Its zero value has no
// accounts; Add them before use. Set the fields before the first call and
// do not change them afterwards.
type Source struct {
	// OnRotate stores a refresh token the token endpoint rotated, for the
	// next start. It is called before the access token that came with it
	// is used; an error fails the refresh (the new refresh token is kept
	// in memory and offered to OnRotate again first at the next refresh).
	// It must be quick and must not log the token. nil: rotated tokens
	// are kept in memory only.
	OnRotate func(ctx context.Context, accountID, refreshToken string) error
	// Margin renews an access token that expires within it: Token never
	// hands out one that is about to expire mid-turn. 0: DefaultMargin
	// (60 s); negative: a token is used until its expiry. A token without
	// an expiry is used until an upstream refuses it (Refresh).
	Margin time.Duration
	// RequestTimeout bounds one token request. The request does not end
	// when the caller that started it gives up, since an endpoint that
	// rotates refresh tokens may have rotated it already; the callers
	// waiting for it stop waiting when their own contexts end. 0:
	// DefaultRequestTimeout (30 s).
	RequestTimeout time.Duration
	// HTTPClient sends token requests. nil: http.DefaultClient.
	HTTPClient *http.Client

	mu       sync.RWMutex
	accounts map[string]*account
	flight   singleflight.Group // one token request per account at a time
}

// account is one account's state. The fields under mu change together
// when a refresh succeeds.
type account struct {
	id  string
	cfg *oauth2.Config

	mu       sync.Mutex
	refresh  string        // the refresh token to use next
	access   *oauth2.Token // the current access token; nil none
	unstored *oauth2.Token // a refresh's answer whose rotated refresh token OnRotate has not stored yet
}

// Add registers (or replaces) the account with ID id.
func (s *Source) Add(id string, a Account) {
	cfg := a.Config
	if cfg.Endpoint.AuthStyle == oauth2.AuthStyleAutoDetect {
		cfg.Endpoint.AuthStyle = oauth2.AuthStyleInParams
		if cfg.ClientSecret != "" {
			cfg.Endpoint.AuthStyle = oauth2.AuthStyleInHeader
		}
	}
	acc := &account{id: id, cfg: &cfg, refresh: a.RefreshToken, access: a.Token}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.accounts == nil {
		s.accounts = map[string]*account{}
	}
	s.accounts[id] = acc
}

// ErrUnknownAccount is returned (wrapped) for an account never added.
var ErrUnknownAccount = errors.New("oauthcreds: no OAuth client for the account")

// Token implements scheduler.Credentials: the account's access token,
// refreshed first when it expires within Margin.
func (s *Source) Token(ctx context.Context, a *scheduler.Account) (string, error) {
	acc, err := s.account(a)
	if err != nil {
		return "", err
	}
	if tok := acc.current(s.margin(), ""); tok != "" {
		return tok, nil
	}
	return s.renew(ctx, acc, "")
}

// Refresh implements scheduler.Refresher: a new access token in place of
// rejected. When the current token is already another one that is valid
// (a refresh ended meanwhile), that one is returned without a request.
func (s *Source) Refresh(ctx context.Context, a *scheduler.Account, rejected string) (string, error) {
	acc, err := s.account(a)
	if err != nil {
		return "", err
	}
	if tok := acc.current(s.margin(), rejected); tok != "" {
		return tok, nil
	}
	return s.renew(ctx, acc, rejected)
}

func (s *Source) account(a *scheduler.Account) (*account, error) {
	if a == nil {
		return nil, fmt.Errorf("%w: nil account", ErrUnknownAccount)
	}
	s.mu.RLock()
	acc := s.accounts[a.ID]
	s.mu.RUnlock()
	if acc == nil {
		return nil, fmt.Errorf("%w %q", ErrUnknownAccount, a.ID)
	}
	return acc, nil
}

func (s *Source) margin() time.Duration {
	switch {
	case s.Margin == 0:
		return DefaultMargin
	case s.Margin < 0:
		return 0
	}
	return s.Margin
}

// current is the access token if it is valid for more than margin and is
// not rejected; "" otherwise.
func (acc *account) current(margin time.Duration, rejected string) string {
	acc.mu.Lock()
	defer acc.mu.Unlock()
	t := acc.access
	if t == nil || t.AccessToken == "" || t.AccessToken == rejected {
		return ""
	}
	if !t.Expiry.IsZero() && time.Until(t.Expiry) <= margin {
		return ""
	}
	return t.AccessToken
}

// renew waits for the account's refresh in flight, or starts one, and
// returns its token. A refresh started by someone else may end with the
// very token this caller saw rejected (it began before the rejection was
// known): then once more, with this caller's own.
func (s *Source) renew(ctx context.Context, acc *account, rejected string) (string, error) {
	for range 2 {
		ch := s.flight.DoChan(acc.id, func() (any, error) {
			// A refresh that ended just before this one started already
			// did the work.
			if tok := acc.current(s.margin(), rejected); tok != "" {
				return tok, nil
			}
			return s.exchange(ctx, acc)
		})
		var res singleflight.Result
		select {
		case res = <-ch:
		case <-ctx.Done():
			return "", ctx.Err()
		}
		if res.Err != nil {
			return "", res.Err
		}
		if tok := res.Val.(string); rejected == "" || tok != rejected {
			return tok, nil
		}
	}
	return "", &Error{AccountID: acc.id, What: "the token endpoint renewed the rejected access token to itself"}
}

// exchange makes the token request and adopts its answer once a rotated
// refresh token is stored. It runs on a context detached from the
// caller's: see RequestTimeout.
func (s *Source) exchange(ctx context.Context, acc *account) (string, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.requestTimeout())
	defer cancel()
	acc.mu.Lock()
	refresh, pending := acc.refresh, acc.unstored
	acc.mu.Unlock()

	t := pending
	if t == nil {
		if refresh == "" {
			return "", &Error{AccountID: acc.id, What: "no refresh token"}
		}
		if s.HTTPClient != nil {
			ctx = context.WithValue(ctx, oauth2.HTTPClient, s.HTTPClient)
		}
		var err error
		t, err = acc.cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: refresh}).Token()
		if err != nil {
			return "", tokenError(acc.id, err, refresh)
		}
		if t.AccessToken == "" {
			return "", &Error{AccountID: acc.id, What: "the token endpoint answered no access token"}
		}
		if t.RefreshToken == "" {
			t.RefreshToken = refresh
		}
	}
	if t.RefreshToken != refresh && s.OnRotate != nil {
		if err := s.OnRotate(ctx, acc.id, t.RefreshToken); err != nil {
			acc.mu.Lock()
			acc.unstored = t
			acc.mu.Unlock()
			msg := strings.ReplaceAll(err.Error(), t.RefreshToken, "[redacted]")
			return "", &Error{AccountID: acc.id, What: "storing the rotated refresh token failed: " + msg}
		}
	}
	acc.mu.Lock()
	acc.refresh, acc.access, acc.unstored = t.RefreshToken, t, nil
	acc.mu.Unlock()
	if pending != nil {
		// Stored at last; its access token may have expired meanwhile.
		if tok := acc.current(s.margin(), ""); tok == "" {
			return s.exchange(ctx, acc)
		}
	}
	return t.AccessToken, nil
}

func (s *Source) requestTimeout() time.Duration {
	if s.RequestTimeout > 0 {
		return s.RequestTimeout
	}
	return DefaultRequestTimeout
}

// Error is a failed refresh. Its text never carries a token or the token
// endpoint's answer.
type Error struct {
	AccountID string
	// Status is the token endpoint's HTTP status; 0 when it gave none.
	Status int
	// Code is its RFC 6749 error code (invalid_grant, ...), when it gave a
	// well-formed one.
	Code string
	// What says what went wrong otherwise.
	What string
	// Err is the transport error, when the request failed before an
	// answer.
	Err error
}

func (e *Error) Error() string {
	s := fmt.Sprintf("oauthcreds: refreshing the token of account %q: ", e.AccountID)
	switch {
	case e.Status != 0 && e.Code != "":
		return s + fmt.Sprintf("the token endpoint answered %d %s", e.Status, e.Code)
	case e.Status != 0:
		return s + fmt.Sprintf("the token endpoint answered %d", e.Status)
	case e.Code != "":
		return s + "the token endpoint answered " + e.Code
	case e.Err != nil:
		return s + e.Err.Error()
	}
	return s + e.What
}

func (e *Error) Unwrap() error { return e.Err }

// errorCode is an RFC 6749 error code as endpoints send them; anything
// else (which could be anything) is left out.
var errorCode = regexp.MustCompile(`^[a-z_]{1,64}$`)

// tokenError keeps of a failed token request what is safe to show: the
// status and error code of a refusal, the transport error of a request
// that got no answer (its URL is the token endpoint's, which holds no
// token), or only that the answer was not usable.
func tokenError(id string, err error, refresh string) error {
	if re, ok := errors.AsType[*oauth2.RetrieveError](err); ok {
		e := &Error{AccountID: id, What: "the token endpoint refused the refresh"}
		if re.Response != nil {
			e.Status = re.Response.StatusCode
		}
		if errorCode.MatchString(re.ErrorCode) {
			e.Code = re.ErrorCode
		}
		return e
	}
	if ue, ok := errors.AsType[*url.Error](err); ok && !strings.Contains(ue.Error(), refresh) {
		return &Error{AccountID: id, Err: ue}
	}
	return &Error{AccountID: id, What: "the token endpoint's answer was not a usable token"}
}
