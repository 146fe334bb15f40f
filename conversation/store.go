package conversation

import (
	"context"
	"errors"
)

// ErrNotFound is returned by Store.Get when there is no record of the
// response for that API key: never made, expired, deleted, or made under
// another key.
var ErrNotFound = errors.New("conversation: no record of the response")

// Store keeps the relay's records of served turns by API key and response
// id. A record is a JSON object the relay writes and reads back:
//
//	{"response_id":"resp_…","api_key_id":"…","previous_response_id":"resp_…",
//	 "model":"…","account_id":"…","store":true,
//	 "input":[…items…],"output":[…items…],"created_at":"2026-12-04T07:00:00Z"}
//
// A Store keeps it as bytes; its size is len(record). Implementations must
// be safe for concurrent use; the relay bounds each call by its
// HookTimeout and treats what Get returns as untrusted input.
type Store interface {
	// Get returns the record of responseID created under apiKeyID, or an
	// error wrapping ErrNotFound. The caller does not modify it.
	Get(ctx context.Context, apiKeyID, responseID string) ([]byte, error)
	// Put stores record under (apiKeyID, responseID), replacing any
	// record there. The Store may keep record; the caller does not modify
	// it afterwards.
	Put(ctx context.Context, apiKeyID, responseID string, record []byte) error
	// Delete removes the record of responseID created under apiKeyID; no
	// record is not an error.
	Delete(ctx context.Context, apiKeyID, responseID string) error
}
