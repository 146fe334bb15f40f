package wsproxy_test

import (
	"encoding/json"

	"github.com/relaykit/responsesrelay/relay"
)

// passUpstreamErrors is a MapError hook that answers with the upstream's
// own status and (masked) body whenever the body is JSON, as a host that
// trusts its upstreams might write.
func passUpstreamErrors(ue *relay.UpstreamError) *relay.APIError {
	a := relay.MapUpstreamError(ue)
	if ue.Status > 0 {
		a.Status = ue.Status
	}
	if json.Valid(ue.Body) {
		a.Raw = ue.Body
	}
	return a
}
