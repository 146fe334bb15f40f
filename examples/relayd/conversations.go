package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/relaykit/responsesrelay/conversation"
	"github.com/relaykit/responsesrelay/examples/internal/sqlitefile"
	"github.com/relaykit/responsesrelay/examples/redisstore"
	"github.com/relaykit/responsesrelay/examples/sqlconversation"
)

// Drivers of the conversations section.
const (
	convMemory   = "memory"
	convSQLite   = "sqlite"
	convPostgres = "postgres"
	convRedis    = "redis"
	convOff      = "off"
)

// Defaults of the conversations section.
const (
	defaultConvTTL      = "24h"
	defaultConvMaxBytes = 256 << 20
	defaultConvFile     = "conversations.db"
)

// ConversationsConfig says where the records of served turns are kept,
// which the relay needs to move a conversation to another account. The
// records hold user content: prompts, answers, tool calls.
type ConversationsConfig struct {
	// Driver is "memory" (the default: this process only), "sqlite",
	// "postgres", "redis" or "off" (keep nothing: a conversation then
	// stays on its account).
	Driver string `json:"driver"`
	// DSN: for "sqlite" a file or file: URI (default: conversations.db in
	// the directory of a SQLite usage log, else the working directory);
	// for "postgres" a URL or key=value pairs (default: usage.dsn when the
	// usage log is in PostgreSQL); for "redis" a redis:// URL (default:
	// the top-level redis). Unused by "memory" and "off".
	DSN string `json:"dsn"`
	// TTL is how long a record is kept after its turn, as a Go duration
	// ("24h", "90m"). Default 24h.
	TTL string `json:"ttl"`
	// MaxBytes bounds the records kept by "memory", oldest evicted first.
	// Default 256 MiB. The other drivers are bounded by the TTL.
	MaxBytes int64 `json:"max_bytes"`
}

// applyDefaults fills what c leaves empty; usage and redisURL are the
// rest of the config, whose databases the conversations may share.
func (c *ConversationsConfig) applyDefaults(usage UsageConfig, redisURL string) {
	if c.Driver == "" {
		c.Driver = convMemory
	}
	if c.TTL == "" {
		c.TTL = defaultConvTTL
	}
	switch c.Driver {
	case convMemory:
		if c.MaxBytes == 0 {
			c.MaxBytes = defaultConvMaxBytes
		}
	case convSQLite:
		if c.DSN == "" {
			c.DSN = defaultConvFile
			if usage.Driver == convSQLite {
				if p := sqlitefile.Path(usage.DSN); p != "" {
					c.DSN = filepath.Join(filepath.Dir(p), defaultConvFile)
				}
			}
		}
	case convPostgres:
		if c.DSN == "" && usage.Driver == convPostgres {
			c.DSN = usage.DSN
		}
	case convRedis:
		if c.DSN == "" {
			c.DSN = redisURL
		}
	}
}

// validate reports the section's problems through bad.
func (c *ConversationsConfig) validate(bad func(format string, args ...any)) {
	switch c.Driver {
	case convMemory, convOff:
		if c.DSN != "" {
			bad("conversations.dsn: not used with driver %q", c.Driver)
		}
	case convSQLite:
		if strings.TrimSpace(c.DSN) == "" {
			bad("conversations.dsn: %q is not a file name", c.DSN)
		}
	case convPostgres:
		if strings.TrimSpace(c.DSN) == "" {
			bad("conversations.dsn: required with driver \"postgres\" unless usage is in PostgreSQL (a URL like postgres://user@host:5432/db)")
		}
	case convRedis:
		if c.DSN == "" {
			bad("conversations.dsn: required with driver \"redis\" unless redis is set (a URL like redis://127.0.0.1:6379/0)")
		} else if err := checkRedisURL(c.DSN); err != nil {
			bad("conversations.dsn: %v", err)
		}
	default:
		bad("conversations.driver: %q is not supported; use \"memory\", \"sqlite\", \"postgres\", \"redis\" or \"off\"", c.Driver)
	}
	if d, err := time.ParseDuration(c.TTL); err != nil {
		bad("conversations.ttl: %q is not a duration like \"24h\" or \"90m\"", c.TTL)
	} else if d <= 0 {
		bad("conversations.ttl: %q must be positive", c.TTL)
	}
	switch {
	case c.MaxBytes < 0:
		bad("conversations.max_bytes: must not be negative; use \"driver\": \"off\" to keep no records")
	case c.MaxBytes != 0 && c.Driver != convMemory:
		bad("conversations.max_bytes: used by driver \"memory\" only; the %s records are bounded by ttl", c.Driver)
	}
}

// ttl is the parsed TTL of a validated config.
func (c ConversationsConfig) ttl() time.Duration {
	d, _ := time.ParseDuration(c.TTL)
	return d
}

// describe names where the records are for logs, without credentials.
func (c ConversationsConfig) describe() string {
	switch c.Driver {
	case convSQLite:
		return "sqlite " + c.DSN
	case convPostgres:
		pc, err := pgconn.ParseConfig(c.DSN)
		if err != nil {
			return "postgres (DSN not parsed)"
		}
		return fmt.Sprintf("postgres %s@%s/%s", pc.User, net.JoinHostPort(pc.Host, strconv.Itoa(int(pc.Port))), pc.Database)
	case convRedis:
		return "redis " + redisAddr(c.DSN)
	case convMemory:
		return fmt.Sprintf("memory (%d MiB)", c.MaxBytes>>20)
	}
	return c.Driver
}

// openConversations sets the relay's conversation store up as cfg says.
// With driver "redis" and the top-level redis URL, it shares the server's
// client; otherwise what it opens, Close closes.
func (s *server) openConversations(cfg ConversationsConfig, usage UsageConfig, redisURL string) (conversation.Store, error) {
	cfg.applyDefaults(usage, redisURL) // a config built in code may leave them out
	switch cfg.Driver {
	case convOff:
		return &conversation.Memory{MaxBytes: -1}, nil
	case convSQLite, convPostgres:
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st, err := sqlconversation.Open(ctx, cfg.Driver, cfg.DSN, &sqlconversation.Options{TTL: cfg.ttl()})
		if err != nil {
			return nil, fmt.Errorf("conversations (%s): %w", cfg.describe(), err)
		}
		s.convSQL = st
		return st, nil
	case convRedis:
		rdb := s.rdb
		if rdb == nil || cfg.DSN != redisURL {
			c, err := redisstore.NewClient(cfg.DSN)
			if err != nil {
				return nil, fmt.Errorf("conversations: %w", err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := c.Ping(ctx).Err(); err != nil {
				c.Close()
				return nil, fmt.Errorf("conversations: redis at %s: %w", redisAddr(cfg.DSN), err)
			}
			s.convRedis, rdb = c, c
		}
		return redisstore.NewConversations(rdb, &redisstore.ConversationOptions{TTL: cfg.ttl()}), nil
	default:
		return &conversation.Memory{MaxBytes: cfg.MaxBytes, TTL: cfg.ttl()}, nil
	}
}

// closeConversations closes what openConversations opened.
func (s *server) closeConversations() error {
	var err error
	if s.convSQL != nil {
		err = s.convSQL.Close()
	}
	if s.convRedis != nil {
		err = errors.Join(err, s.convRedis.Close())
	}
	return err
}
