package relay

import (
	"strconv"

	"github.com/coder/websocket"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
)

// checkFrame decides on one client frame as the read loop gets it: a text
// message of type response.create (an absent or null type counts as one)
// goes on to the turn loop; anything else closes the connection with the
// returned code and reason (cut to 120 bytes). Code 0 means go on.
func checkFrame(typ websocket.MessageType, data []byte) (websocket.StatusCode, string) {
	if typ != websocket.MessageText {
		return websocket.StatusPolicyViolation, "binary messages are not supported; send response.create as text"
	}
	switch t := gjson.GetBytes(data, "type").String(); t {
	case "", "response.create":
		return 0, ""
	case "response.append":
		return websocket.StatusPolicyViolation, "response.append is not supported: send response.create with previous_response_id"
	default:
		return websocket.StatusPolicyViolation, closeReason("unsupported message type " + strconv.Quote(t) + ": send response.create")
	}
}

// parseTurn validates a response.create as a turn: the relay's request
// validation, then "type" set to response.create where the client left it
// out, so that the upstream socket gets a well-formed message. A non-nil
// error is answered with an error frame and the connection stays open.
func parseTurn(msg []byte) (*request, *APIError) {
	req, apiErr := parseRequest(msg)
	if apiErr != nil {
		return nil, apiErr
	}
	if t := gjson.GetBytes(msg, "type"); t.Type != gjson.String || t.Str != "response.create" {
		b, err := sjson.SetBytes(msg, "type", "response.create")
		if err != nil {
			return nil, &APIError{Status: 400, Type: "invalid_request_error", Message: "Failed to parse request body"}
		}
		req.Body = b
	}
	return req, nil
}
