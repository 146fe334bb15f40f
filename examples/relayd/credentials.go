package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/oauth2"

	"github.com/relaykit/responsesrelay/examples/oauthcreds"
	"github.com/relaykit/responsesrelay/scheduler"
)

// buildCredentials gives every account its upstream token: the static
// keys of api_key accounts, and for oauth accounts an oauthcreds.Source
// started from their refresh token files. With no oauth account it is
// the static keys alone, which the relay looks up without a bounded call.
func buildCredentials(accounts []AccountConfig, static scheduler.StaticKeys, logger *slog.Logger) (scheduler.Credentials, error) {
	src := &oauthcreds.Source{}
	files := map[string]string{} // account ID -> its refresh token file
	for _, a := range accounts {
		if a.OAuth == nil {
			continue
		}
		rt, err := readRefreshToken(a.OAuth.RefreshTokenFile)
		if err != nil {
			return nil, fmt.Errorf("account %s: %w", a.ID, err)
		}
		src.Add(a.ID, oauthcreds.Account{
			Config: oauth2.Config{
				ClientID:     a.OAuth.ClientID,
				ClientSecret: a.OAuth.ClientSecret,
				Endpoint:     oauth2.Endpoint{TokenURL: a.OAuth.TokenURL},
			},
			RefreshToken: rt,
		})
		files[a.ID] = a.OAuth.RefreshTokenFile
	}
	if len(files) == 0 {
		return static, nil
	}
	src.OnRotate = func(_ context.Context, id, rt string) error {
		if err := writeRefreshToken(files[id], rt); err != nil {
			return err
		}
		logger.Info("relayd: stored a rotated refresh token", "account", id, "file", files[id])
		return nil
	}
	return &accountCredentials{static: static, oauth: src}, nil
}

// accountCredentials serves api_key accounts from static and the others
// from oauth. It is a scheduler.Refresher: an upstream 401 renews an
// oauth account's token; a static key cannot be renewed.
type accountCredentials struct {
	static scheduler.StaticKeys
	oauth  *oauthcreds.Source
}

func (c *accountCredentials) Token(ctx context.Context, a *scheduler.Account) (string, error) {
	if a != nil {
		if k, ok := c.static[a.ID]; ok {
			return k, nil
		}
	}
	return c.oauth.Token(ctx, a)
}

// errStaticKey is the renewal of an api_key account: there is none.
var errStaticKey = errors.New("the account has a static api_key, which cannot be renewed")

func (c *accountCredentials) Refresh(ctx context.Context, a *scheduler.Account, rejected string) (string, error) {
	if a != nil {
		if _, ok := c.static[a.ID]; ok {
			return "", errStaticKey
		}
	}
	return c.oauth.Refresh(ctx, a, rejected)
}

// readRefreshToken reads a refresh token file: one token, surrounding
// whitespace ignored. Errors name the file, never its content.
func readRefreshToken(name string) (string, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return "", fmt.Errorf("oauth.refresh_token_file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	switch {
	case tok == "":
		return "", fmt.Errorf("oauth.refresh_token_file %s is empty", name)
	case strings.ContainsAny(tok, " \t\r\n"):
		return "", fmt.Errorf("oauth.refresh_token_file %s holds more than one token", name)
	}
	return tok, nil
}

// writeRefreshToken replaces the file's content with tok atomically: a
// new file in the same directory, mode 0600, synced, renamed over the old
// one, and the directory synced, so that a crash leaves the old token or
// the new one, never a part.
func writeRefreshToken(name, tok string) error {
	dir, base := filepath.Split(name)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing the refresh token: %w", err)
	}
	tmp := f.Name()
	err = f.Chmod(0o600)
	if err == nil {
		_, err = f.WriteString(tok + "\n")
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, name)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing the refresh token: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
