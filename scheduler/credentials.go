package scheduler

import (
	"context"
	"errors"
	"fmt"
)

// Refresher is Credentials whose tokens can be renewed, such as OAuth
// access tokens. Token may renew a token ahead of its expiry on its own;
// Refresh is for a token the upstream refused before its time (revoked,
// rotated elsewhere, expired early).
//
// When an upstream answers 401 to the token rejected, the relay calls
// Refresh and sends the same request once more, on the same account, with
// the token it returns. Concurrent 401s of one account for the same
// rejected token share one call. If Refresh fails, or the second answer is
// a 401 too, the account cools down as for any 401 (Scheduler.Observe),
// with the refresh error in the cooldown's detail (AccountState.
// CoolingDetail, AccountEvent.Reason), so that error must not carry token
// text. Refresh returns a token other than rejected, or an error; it runs
// under the same bound as Token (relay.Handler.HookTimeout).
type Refresher interface {
	Credentials
	Refresh(ctx context.Context, a *Account, rejected string) (string, error)
}

// errNoCredentials is returned (wrapped) by StaticKeys when it has no key
// for an account.
var errNoCredentials = errors.New("scheduler: no upstream credentials")

// StaticKeys maps account IDs to upstream bearer tokens. It implements
// Credentials for hosts whose keys do not rotate.
type StaticKeys map[string]string

// Token implements Credentials. Its error names the account, never a key.
func (k StaticKeys) Token(_ context.Context, a *Account) (string, error) {
	if a == nil {
		return "", fmt.Errorf("%w: nil account", errNoCredentials)
	}
	if t := k[a.ID]; t != "" {
		return t, nil
	}
	return "", fmt.Errorf("%w for account %q", errNoCredentials, a.ID)
}
