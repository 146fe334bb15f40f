package conversation

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// ErrNotFound is returned by Store.Get when there is no record of the
// response for that API key: never made, expired, deleted, or made under
// another key.
var ErrNotFound = errors.New("conversation: no record of the response")

// Record is one served turn. Input and Output are JSON arrays of items,
// as the Responses API writes them: Input is the turn's input (a string
// input becomes one user message), Output the response's output items.
// A Record is not modified once it is given to Put or returned by Get.
type Record struct {
	ResponseID         string          `json:"response_id"`
	APIKeyID           string          `json:"api_key_id"`
	PreviousResponseID string          `json:"previous_response_id,omitempty"`
	Model              string          `json:"model"`
	AccountID          string          `json:"account_id"`
	Store              bool            `json:"store"` // the request's store flag
	Input              json.RawMessage `json:"input"`
	Output             json.RawMessage `json:"output"`
	CreatedAt          time.Time       `json:"created_at"`
}

// recordOverhead approximates the bytes a Record costs beyond its
// variable parts (struct, map entry, list element).
const recordOverhead = 256

// Size is the bytes r holds, as Memory counts them against MaxBytes.
func (r *Record) Size() int64 {
	return int64(recordOverhead + len(r.ResponseID) + len(r.APIKeyID) + len(r.PreviousResponseID) +
		len(r.Model) + len(r.AccountID) + len(r.Input) + len(r.Output))
}

// Store keeps Records by API key and response id. Implementations must be
// safe for concurrent use; the relay bounds each call by its HookTimeout.
type Store interface {
	// Get returns the record of responseID created under apiKeyID, or an
	// error wrapping ErrNotFound.
	Get(ctx context.Context, apiKeyID, responseID string) (*Record, error)
	// Put stores r under (r.APIKeyID, r.ResponseID), replacing any record
	// there.
	Put(ctx context.Context, r *Record) error
	// Delete removes the record of responseID created under apiKeyID; no
	// record is not an error.
	Delete(ctx context.Context, apiKeyID, responseID string) error
}
