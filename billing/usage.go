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
// Its JSON form uses snake_case names, as every type a host serialises does.
type Usage struct {
	RequestID  string `json:"request_id"`            // the relay's id for the turn, also sent as X-Relay-Request-Id
	ResponseID string `json:"response_id,omitempty"` // resp_... from the upstream, "" when none arrived
	UserID     string `json:"user_id"`
	APIKeyID   string `json:"api_key_id"`
	GroupID    string `json:"group_id"`
	AccountID  string `json:"account_id"`

	Model         string `json:"model"`          // requested by the client
	UpstreamModel string `json:"upstream_model"` // sent upstream (after ModelMap)
	Transport     string `json:"transport"`      // "http" or "ws"
	Stream        bool   `json:"stream"`
	Turn          int    `json:"turn"` // 1-based turn number on a WebSocket connection; 1 over HTTP
	// ContextRebuilt: the account that served the turn did not hold its
	// previous_response_id chain, so the relay sent the chain whole from
	// its conversation records. The tokens are what that account reported
	// (the whole context counts as input).
	ContextRebuilt bool `json:"context_rebuilt,omitempty"`

	InputTokens       int64  `json:"input_tokens"`
	CachedInputTokens int64  `json:"cached_input_tokens"` // input_tokens_details.cached_tokens
	OutputTokens      int64  `json:"output_tokens"`
	ReasoningTokens   int64  `json:"reasoning_tokens"` // output_tokens_details.reasoning_tokens
	TotalTokens       int64  `json:"total_tokens"`
	ServiceTier       string `json:"service_tier,omitempty"`
	// CostMicros is what the turn cost in micro-USD ($1 is 1_000_000), as
	// Prices.Cost computes it from the tokens above: exact, rounded half
	// up once. 0 when the turn was not priced.
	CostMicros int64 `json:"cost_micros"`

	Status       string    `json:"status"`         // one of the Status constants
	Attempts     int       `json:"attempts"`       // upstream attempts, failovers included
	FirstTokenMS int64     `json:"first_token_ms"` // time to first output event, -1 when none
	DurationMS   int64     `json:"duration_ms"`
	UserAgent    string    `json:"user_agent,omitempty"`
	ClientIP     string    `json:"client_ip,omitempty"`
	CreatedAt    time.Time `json:"created_at"` // when the turn started
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

// BatchSink is a UsageSink that can also store several records in one
// call, typically one transaction. NewAsync and OpenSpool deliver to a
// BatchSink in batches (DeliveryOptions.MaxBatch), and Settling over one
// is one.
//
// RecordBatch stores all the records of us or none: nil means every one is
// stored; after an error the caller treats every one as not stored and may
// deliver them again, in a batch or one by one. It should be idempotent by
// RequestID as Record is: a record already stored is ignored, and so is a
// later copy of a RequestID within us. It must be safe for concurrent use,
// and must neither change us nor keep it after it returns (the caller
// reuses it).
type BatchSink interface {
	UsageSink
	RecordBatch(ctx context.Context, us []Usage) error
}
