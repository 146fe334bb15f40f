package scheduler

import (
	"context"
	"errors"
	"fmt"
)

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
