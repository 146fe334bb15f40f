package scheduler

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// defaultOwnerTTL is how long the owner of a response is remembered by
// default: as long as the upstream keeps a stored response.
const defaultOwnerTTL = 30 * 24 * time.Hour

// ErrResponseNotOwned is returned (wrapped) by Select when
// Request.PreviousResponseID names a response that was created under
// another API key (Request.APIKeyID), or whose binding does not say who
// created it. The relay answers it as the upstream answers an unknown
// response (400 previous_response_not_found) and sends nothing upstream:
// knowing a response id must not let another key continue, and so read,
// that conversation.
var ErrResponseNotOwned = errors.New("scheduler: previous response not owned by this API key")

// A response binding's value is versioned:
//
//	o1:<sticky until, unix ms>:<len(owner)>:<owner><account id>
//
// The owner is the API key ID that created the response; its length prefix
// keeps any owner and account ID apart. The key lives for OwnerTTL, the
// account stickiness only until the time in the value, so that ownership
// outlives the short stickiness window.
const bindingVersion = "o1:"

// binding is a decoded response binding.
type binding struct {
	until   int64 // unix milliseconds; the account is sticky before it
	owner   string
	account string
}

func encodeBinding(b binding) string {
	buf := make([]byte, 0, len(bindingVersion)+24+len(b.owner)+len(b.account))
	buf = append(buf, bindingVersion...)
	buf = strconv.AppendInt(buf, b.until, 10)
	buf = append(buf, ':')
	buf = strconv.AppendInt(buf, int64(len(b.owner)), 10)
	buf = append(buf, ':')
	buf = append(buf, b.owner...)
	buf = append(buf, b.account...)
	return string(buf)
}

// decodeBinding parses a value written by encodeBinding. Anything else (a
// value of an older version, which holds only an account ID, or a corrupt
// one) is not ok. Numbers must be canonical, so that a decoded value
// encodes back to the same string.
func decodeBinding(v string) (binding, bool) {
	if len(v) < len(bindingVersion) || v[:len(bindingVersion)] != bindingVersion {
		return binding{}, false
	}
	rest := v[len(bindingVersion):]
	until, rest, ok := cutNumber(rest)
	if !ok {
		return binding{}, false
	}
	n, rest, ok := cutNumber(rest)
	if !ok || n > int64(len(rest)) || n == int64(len(rest)) {
		return binding{}, false // no room for the owner and an account ID
	}
	return binding{until: until, owner: rest[:n], account: rest[n:]}, true
}

// cutNumber parses the canonical decimal before the first ':' of s (no
// sign, no leading zero, at most 18 digits, so it cannot overflow).
func cutNumber(s string) (int64, string, bool) {
	var n int64
	for i := 0; i < len(s) && i <= 18; i++ {
		c := s[i]
		if c == ':' {
			if i == 0 || s[0] == '0' && i > 1 {
				return 0, "", false
			}
			return n, s[i+1:], true
		}
		if c < '0' || c > '9' {
			return 0, "", false
		}
		n = n*10 + int64(c-'0')
	}
	return 0, "", false
}

// previous reads the binding of q.PreviousResponseID and returns the
// account it is sticky to ("" when none, or when stickiness has ended). It
// fails with ErrResponseNotOwned when the binding's owner is not
// q.APIKeyID, or the binding cannot be decoded (written by an older
// version, which did not record the owner: refusing it lets no other key in
// during an upgrade, at the cost of chains bound within the last StickyTTL).
// A missing binding (never made, expired, evicted) or a failing store does
// not refuse: the turn goes where Select sends it and the upstream answers
// for itself.
//
// An empty APIKeyID is an owner like any other: a response created without
// an API key ID can be chained only by requests without one.
func (s *Scheduler) previous(ctx context.Context, q Request, now int64) (string, error) {
	v, ok, err := s.get(ctx, responseKey(q.PreviousResponseID))
	if err != nil {
		s.log.Warn("scheduler: reading a sticky binding failed", "error", err)
		return "", nil
	}
	if !ok {
		return "", nil
	}
	return previousIn(q, v, now)
}

// previousIn is previous for the binding value v read from the Store.
func previousIn(q Request, v string, now int64) (string, error) {
	b, ok := decodeBinding(v)
	if !ok || b.owner != q.APIKeyID {
		return "", fmt.Errorf("%w (response %q)", ErrResponseNotOwned, q.PreviousResponseID)
	}
	if b.until <= now/int64(time.Millisecond) {
		return "", nil // owned, no longer sticky
	}
	return b.account, nil
}

// responseBinding is the write that records that q.APIKeyID created
// responseID on accountID: sticky for StickyTTL, owned for OwnerTTL.
func (s *Scheduler) responseBinding(q Request, accountID, responseID string) StoreWrite {
	until := s.now().Add(s.stickyTTL)
	ms := max(0, (until.UnixNano()+int64(time.Millisecond)-1)/int64(time.Millisecond))
	v := encodeBinding(binding{until: ms, owner: q.APIKeyID, account: accountID})
	return StoreWrite{Key: responseKey(responseID), Value: v, TTL: max(s.ownerTTL, s.stickyTTL)}
}

// ErrUnknownResponse is returned (wrapped) by Holder when no account is
// known to hold the response: it was never bound, its binding expired
// (OwnerTTL), or its account left the group.
var ErrUnknownResponse = errors.New("scheduler: no account holds the response")

// Holder returns the account in group that holds responseID, created under
// apiKeyID: the binding Bind wrote, kept for OwnerTTL. It fails with an
// error wrapping ErrResponseNotOwned when another key created the
// response (or its binding does not say who did), and with one wrapping
// ErrUnknownResponse when no account is known to hold it. It takes no
// slot: the relay uses it for calls on a stored response (retrieve,
// delete, cancel), which only that account can answer.
func (s *Scheduler) Holder(ctx context.Context, group, apiKeyID, responseID string) (*Account, error) {
	s.init()
	v, ok, err := s.get(ctx, responseKey(responseID))
	if err != nil {
		return nil, fmt.Errorf("scheduler: reading the binding of response %q: %w", responseID, err)
	}
	if !ok {
		return nil, fmt.Errorf("%w (response %q)", ErrUnknownResponse, responseID)
	}
	b, ok := decodeBinding(v)
	if !ok || b.owner != apiKeyID {
		return nil, fmt.Errorf("%w (response %q)", ErrResponseNotOwned, responseID)
	}
	if s.Pool == nil {
		return nil, errors.New("scheduler: Scheduler.Pool is nil")
	}
	accounts, err := s.Pool.Accounts(ctx, group)
	if err != nil {
		return nil, fmt.Errorf("scheduler: listing the accounts of group %q: %w", group, err)
	}
	for _, a := range accounts {
		if a.ID == b.account {
			return a, nil
		}
	}
	return nil, fmt.Errorf("%w (response %q: account %q is not in group %q)", ErrUnknownResponse, responseID, b.account, group)
}
