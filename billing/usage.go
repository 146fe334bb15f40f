package billing

import (
	"context"
	"time"
)

// Status values of a Usage record.
const (
	StatusCompleted     = "completed"      // response.completed
	StatusIncomplete    = "incomplete"     // response.incomplete (max_output_tokens, content_filter)
	StatusFailed        = "failed"         // response.failed from the upstream
	StatusClientGone    = "client_gone"    // the client left; the upstream was drained for usage
	StatusUpstreamError = "upstream_error" // the upstream broke (reset, EOF, idle) or failed over to exhaustion after output
)

// Usage is one turn that reached an upstream: exactly one record per turn.
type Usage struct {
	RequestID  string // the relay's id for the turn, also sent as X-Relay-Request-Id
	ResponseID string // resp_... from the upstream, "" when none arrived
	UserID     string
	APIKeyID   string
	GroupID    string
	AccountID  string

	Model         string // requested by the client
	UpstreamModel string // sent upstream (after ModelMap)
	Transport     string // "http" or "ws"
	Stream        bool
	Turn          int // 1-based turn number on a WebSocket connection; 1 over HTTP

	InputTokens       int64
	CachedInputTokens int64 // input_tokens_details.cached_tokens
	OutputTokens      int64
	ReasoningTokens   int64 // output_tokens_details.reasoning_tokens
	TotalTokens       int64
	ServiceTier       string

	Status       string // one of the Status constants
	Attempts     int    // upstream attempts, failovers included
	FirstTokenMS int64  // time to first output event, -1 when none
	DurationMS   int64
	UserAgent    string
	ClientIP     string
	CreatedAt    time.Time // when the turn started
}

// UsageSink stores usage records. Record must be safe for concurrent use and
// should be idempotent by RequestID, so that retries never double-count.
type UsageSink interface {
	Record(ctx context.Context, u Usage) error
}

// SinkFunc adapts a function to UsageSink.
type SinkFunc func(ctx context.Context, u Usage) error

// Record calls f.
func (f SinkFunc) Record(ctx context.Context, u Usage) error { return f(ctx, u) }

// Discard is a UsageSink that keeps nothing.
var Discard UsageSink = SinkFunc(func(context.Context, Usage) error { return nil })
