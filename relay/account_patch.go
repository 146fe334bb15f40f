package relay

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/relaykit/responsesrelay/internal/jsonx"
	"github.com/relaykit/responsesrelay/scheduler"
	"github.com/tidwall/sjson"
)

// routedFields are the top-level request fields the relay routes, records
// or translates by: a patch of them would make the account answer a turn
// other than the one the relay scheduled, chained and billed. Both wire
// forms count (input for Responses, messages and stream_options for Chat
// Completions).
var routedFields = map[string]bool{
	"model": true, "stream": true, "stream_options": true, "input": true, "messages": true,
	"previous_response_id": true, "background": true, "conversation": true, "type": true,
}

// maxBodyPatchValue bounds one patched value: a patch is configuration,
// not content.
const maxBodyPatchValue = 64 << 10

// CheckBodyPatch reports what is wrong with an Account.BodyPatch, or nil.
// A key must be a dotted path of letters, digits, '_' and '-' (no sjson
// wildcards or modifiers), must not start at a field the relay routes by
// (model, stream, stream_options, input, messages, previous_response_id,
// background, conversation, type), and a value must be empty (remove) or
// one JSON value of at most 64 KiB. Hosts call it when they load
// accounts; the relay calls it on every attempt and skips an account whose
// patch fails it (Attempt.Reason ReasonAccount).
func CheckBodyPatch(patch map[string]json.RawMessage) error {
	for k, v := range patch {
		if err := checkPatchPath(k); err != nil {
			return err
		}
		if len(v) == 0 {
			continue
		}
		if len(v) > maxBodyPatchValue {
			return fmt.Errorf("body patch %q: value larger than %d bytes", k, maxBodyPatchValue)
		}
		if jsonx.DepthExceeds(v, jsonx.MaxDepth) || !json.Valid(v) {
			return fmt.Errorf("body patch %q: value is not one JSON value", k)
		}
	}
	return nil
}

func checkPatchPath(k string) error {
	if k == "" {
		return fmt.Errorf("body patch: empty path")
	}
	for seg := range strings.SplitSeq(k, ".") {
		if seg == "" {
			return fmt.Errorf("body patch %q: empty path segment", k)
		}
		for _, c := range seg {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
				return fmt.Errorf("body patch %q: %q is not allowed in a path", k, c)
			}
		}
	}
	top, _, _ := strings.Cut(k, ".")
	if routedFields[top] {
		return fmt.Errorf("body patch %q: the relay routes by %q; it cannot be patched", k, top)
	}
	return nil
}

// accountUnusable logs, once per account, that its configuration keeps it
// from serving: every turn moves past it until the host fixes it.
func (h *Handler) accountUnusable(acct *scheduler.Account, err error) {
	if _, logged := h.badPatchLogged.LoadOrStore(acct.ID, true); !logged {
		h.log.Error("relay: account skipped: invalid configuration", "account", acct.ID, "error", err)
	}
}

// applyBodyPatch applies patch in key order, if CheckBodyPatch accepts it.
func applyBodyPatch(body []byte, patch map[string]json.RawMessage) ([]byte, error) {
	if err := CheckBodyPatch(patch); err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(patch))
	for k := range patch {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var err error
	for _, k := range keys {
		if v := patch[k]; len(v) == 0 {
			body, err = sjson.DeleteBytes(body, k)
		} else {
			body, err = sjson.SetRawBytes(body, k, v)
		}
		if err != nil {
			return nil, fmt.Errorf("body patch %q: %w", k, err)
		}
	}
	return body, nil
}
