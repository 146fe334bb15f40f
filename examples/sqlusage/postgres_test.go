package sqlusage_test

import (
	"context"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/examples/sqlusage"
)

func TestPostgresRoundTrip(t *testing.T) {
	s := postgresTarget(t).open(t)
	ctx := context.Background()
	want := sample("rr_1")
	if err := s.Record(ctx, want); err != nil {
		t.Fatal(err)
	}
	var (
		resp, user, key, group, acct, model, upModel, transport, status, tier, ua, ip string
		stream                                                                        bool
		turn, attempts                                                                int32
		in, cached, out, reasoning, total, duration                                   int64
		first                                                                         *int64
		created                                                                       time.Time
	)
	err := s.Pool().QueryRow(ctx, `SELECT response_id, user_id, api_key_id, group_id, account_id, model,
		upstream_model, transport, stream, turn, status, input_tokens, cached_input_tokens, output_tokens,
		reasoning_tokens, total_tokens, service_tier, attempts, first_token_ms, duration_ms, user_agent,
		client_ip, created_at FROM usage_records WHERE request_id = $1`, "rr_1").Scan(
		&resp, &user, &key, &group, &acct, &model, &upModel, &transport, &stream, &turn, &status,
		&in, &cached, &out, &reasoning, &total, &tier, &attempts, &first, &duration, &ua, &ip, &created)
	if err != nil {
		t.Fatal(err)
	}
	if first == nil {
		t.Fatal("first_token_ms is NULL")
	}
	got := []any{resp, user, key, group, acct, model, upModel, transport, stream, int(turn), status,
		in, cached, out, reasoning, total, tier, int(attempts), *first, duration, ua, ip}
	exp := []any{want.ResponseID, want.UserID, want.APIKeyID, want.GroupID, want.AccountID, want.Model,
		want.UpstreamModel, want.Transport, want.Stream, want.Turn, want.Status,
		want.InputTokens, want.CachedInputTokens, want.OutputTokens, want.ReasoningTokens, want.TotalTokens,
		want.ServiceTier, want.Attempts, want.FirstTokenMS, want.DurationMS, want.UserAgent, want.ClientIP}
	for i := range exp {
		if got[i] != exp[i] {
			t.Errorf("column %d = %v, want %v", i, got[i], exp[i])
		}
	}
	if !created.Equal(want.CreatedAt) {
		t.Errorf("created_at = %v, want %v", created, want.CreatedAt)
	}
}

// PostgreSQL text rejects NUL and invalid UTF-8; a user agent carrying
// them must not cost the record.
func TestPostgresOddBytesAreStored(t *testing.T) {
	s := postgresTarget(t).open(t)
	ctx := context.Background()
	u := sample("rr_bytes")
	u.UserAgent = "agent\x00/\xff1"
	if err := s.Record(ctx, u); err != nil {
		t.Fatal(err)
	}
	var ua string
	if err := s.Pool().QueryRow(ctx, `SELECT user_agent FROM usage_records`).Scan(&ua); err != nil {
		t.Fatal(err)
	}
	if ua != "agent\uFFFD/\uFFFD1" {
		t.Fatalf("user_agent = %q", ua)
	}
}

// Relays starting together all create the table without error.
func TestPostgresConcurrentOpen(t *testing.T) {
	tg := postgresTarget(t)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			s, err := sqlusage.OpenPostgres(context.Background(), tg.DSN)
			if err != nil {
				t.Error(err)
				return
			}
			s.Close()
		})
	}
	wg.Wait()
}

func TestNewPostgresKeepsThePool(t *testing.T) {
	owner := postgresTarget(t).open(t)
	s, err := sqlusage.NewPostgres(context.Background(), owner.Pool())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Record(context.Background(), sample("rr_p")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n := countRows(t, owner); n != 1 {
		t.Fatalf("rows = %d, want 1 through the pool still open", n)
	}
}

// within fails the test unless f returns an error no later than limit
// plus some slack: an unreachable database fails calls, it does not hang
// them.
func within(t *testing.T, limit time.Duration, what string, f func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	start := time.Now()
	err := f(ctx)
	took := time.Since(start)
	if err == nil {
		t.Fatalf("%s: no error", what)
	}
	if took > limit+3*time.Second {
		t.Fatalf("%s took %v with a %v context", what, took, limit)
	}
	t.Logf("%s: %v after %v", what, err, took.Round(time.Millisecond))
}

func TestPostgresUnreachable(t *testing.T) {
	dsn := postgresDSN(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	p := newProxy(t, u.Host)
	u.Host = p.addr()
	q := u.Query()
	q.Set("connect_timeout", "5")
	u.RawQuery = q.Encode()
	viaProxy := u.String()

	t.Run("refused", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close() // nothing listens there now
		within(t, 5*time.Second, "OpenPostgres", func(ctx context.Context) error {
			_, err := sqlusage.OpenPostgres(ctx, "postgres://postgres@"+addr+"/postgres?sslmode=disable")
			return err
		})
	})

	s := target{sqlusage.DriverPostgres, viaProxy}.open(t)
	ctx := context.Background()
	if err := s.Record(ctx, sample("rr_before")); err != nil {
		t.Fatal(err)
	}

	p.freeze()
	within(t, 500*time.Millisecond, "Record on a silent server", func(ctx context.Context) error {
		return s.Record(ctx, sample("rr_during"))
	})
	within(t, 500*time.Millisecond, "OpenPostgres on a silent server", func(ctx context.Context) error {
		_, err := sqlusage.OpenPostgres(ctx, viaProxy)
		return err
	})
	p.thaw()

	// Back to normal: a retry, as billing.Async makes, stores the record
	// (a pooled connection broken meanwhile may fail one attempt).
	var lastErr error
	for range 10 {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		lastErr = s.Record(rctx, sample("rr_after"))
		cancel()
		if lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		t.Fatalf("no recovery: %v", lastErr)
	}
	if n := queryInt(t, s, `SELECT count(*) FROM usage_records WHERE request_id IN ('rr_before', 'rr_after')`); n != 2 {
		t.Fatalf("rows = %d, want 2", n)
	}
}
