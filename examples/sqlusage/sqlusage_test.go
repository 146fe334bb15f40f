package sqlusage_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/examples/internal/sqltest"
	"github.com/relaykit/responsesrelay/examples/sqlusage"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func open(t *testing.T) (*sqlusage.Sink, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "usage.db")
	s, err := sqlusage.OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func sample(id string) billing.Usage {
	return billing.Usage{
		RequestID: id, ResponseID: "resp_1", UserID: "u1", APIKeyID: "k-1", GroupID: "default",
		AccountID: "a1", Model: "gpt-5", UpstreamModel: "gpt-5.5", Transport: "http", Stream: true, Turn: 1,
		InputTokens: 11, CachedInputTokens: 3, OutputTokens: 21, ReasoningTokens: 16, TotalTokens: 32,
		ServiceTier: "default", Status: billing.StatusCompleted, Attempts: 2, FirstTokenMS: 7, DurationMS: 40,
		UserAgent: "curl/8", ClientIP: "127.0.0.1", CostMicros: 1_234_567,
		CreatedAt: time.Date(2026, 3, 4, 5, 6, 7, 8_000_000, time.FixedZone("x", 3600)),
	}
}

func TestRecordRoundTrip(t *testing.T) {
	s, _ := open(t)
	ctx := context.Background()
	if err := s.Record(ctx, sample("rr_1")); err != nil {
		t.Fatal(err)
	}
	var (
		resp, user, key, group, acct, model, upModel, transport, status, tier, ua, ip, created string
		stream, turn, in, cached, out, reasoning, total, attempts, duration                    int64
		first                                                                                  sql.NullInt64
	)
	err := s.DB().QueryRowContext(ctx, `SELECT response_id, user_id, api_key_id, group_id, account_id, model,
		upstream_model, transport, stream, turn, status, input_tokens, cached_input_tokens, output_tokens,
		reasoning_tokens, total_tokens, service_tier, attempts, first_token_ms, duration_ms, user_agent,
		client_ip, created_at FROM usage_records WHERE request_id = ?`, "rr_1").Scan(
		&resp, &user, &key, &group, &acct, &model, &upModel, &transport, &stream, &turn, &status,
		&in, &cached, &out, &reasoning, &total, &tier, &attempts, &first, &duration, &ua, &ip, &created)
	if err != nil {
		t.Fatal(err)
	}
	got := []any{resp, user, key, group, acct, model, upModel, transport, stream, turn, status,
		in, cached, out, reasoning, total, tier, attempts, first.Int64, duration, ua, ip, created}
	want := []any{"resp_1", "u1", "k-1", "default", "a1", "gpt-5", "gpt-5.5", "http", int64(1), int64(1), "completed",
		int64(11), int64(3), int64(21), int64(16), int64(32), "default", int64(2), int64(7), int64(40), "curl/8", "127.0.0.1",
		"2026-03-04T04:06:07.008Z"}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("column %d = %v, want %v", i, got[i], want[i])
		}
	}
}

func TestNoFirstTokenIsNull(t *testing.T) {
	eachDriver(t, func(t *testing.T, tg target) {
		s := tg.open(t)
		u := sample("rr_none")
		u.FirstTokenMS = -1
		if err := s.Record(context.Background(), u); err != nil {
			t.Fatal(err)
		}
		var first sql.NullInt64
		if err := sqltest.Scan(s.Pool(), s.DB(), `SELECT first_token_ms FROM usage_records`, nil, &first); err != nil {
			t.Fatal(err)
		}
		if first.Valid {
			t.Fatalf("first_token_ms = %d, want NULL", first.Int64)
		}
	})
}

func TestEmptyRequestIDIsAnError(t *testing.T) {
	s, _ := open(t)
	if err := s.Record(context.Background(), billing.Usage{}); err == nil {
		t.Fatal("a record without request id was accepted")
	}
}

func TestWALAndReopen(t *testing.T) {
	s, path := open(t)
	ctx := context.Background()
	var mode string
	if err := s.DB().QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if mode != "wal" {
		t.Fatalf("journal_mode = %q, want wal", mode)
	}
	var busy int
	if err := s.DB().QueryRowContext(ctx, `PRAGMA busy_timeout`).Scan(&busy); err != nil {
		t.Fatal(err)
	}
	if busy != int(sqlusage.BusyTimeout.Milliseconds()) {
		t.Fatalf("busy_timeout = %d", busy)
	}
	if err := s.Record(ctx, sample("rr_a")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Opening again keeps the rows (CREATE TABLE IF NOT EXISTS).
	s2, err := sqlusage.OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	var n int
	if err := s2.DB().QueryRowContext(ctx, `SELECT count(*) FROM usage_records`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("rows after reopen = %d, want 1", n)
	}
}

func TestOpenRejectsEmptyDSN(t *testing.T) {
	if _, err := sqlusage.OpenSQLite(context.Background(), " "); err == nil {
		t.Fatal("empty DSN accepted")
	}
}

// TestRecordBatchRowsKeepTheirValues: a SQLite batch is written with
// INSERTs of up to 32 rows each (45 = 32 + 8 + 4 + 1); every row keeps
// its own values, the NULL of a record without output included.
func TestRecordBatchRowsKeepTheirValues(t *testing.T) {
	s, _ := open(t)
	ctx := context.Background()
	var us []billing.Usage
	for i := range 45 {
		u := sample(fmt.Sprintf("rr_row_%02d", i))
		u.UserID, u.InputTokens, u.CostMicros = fmt.Sprintf("u%d", i), int64(i), int64(1000+i)
		if i%2 == 1 {
			u.FirstTokenMS = -1
		}
		us = append(us, u)
	}
	if err := s.RecordBatch(ctx, us); err != nil {
		t.Fatal(err)
	}
	if w := sqlusage.Writes(s); w != 1 {
		t.Fatalf("writes = %d, want one transaction", w)
	}
	for i, u := range us {
		var user string
		var in, cost int64
		var first sql.NullInt64
		err := s.DB().QueryRowContext(ctx, `SELECT user_id, input_tokens, cost_micros, first_token_ms
			FROM usage_records WHERE request_id = ?`, u.RequestID).Scan(&user, &in, &cost, &first)
		if err != nil {
			t.Fatalf("%s: %v", u.RequestID, err)
		}
		if user != u.UserID || in != int64(i) || cost != int64(1000+i) || first.Valid != (i%2 == 0) {
			t.Fatalf("%s: user %q, input %d, cost %d, first token %v", u.RequestID, user, in, cost, first)
		}
	}
}
