package relaytest

// The models every account lists, in this order.
var models = []string{"gpt-test", "gpt-5"}

// modelCreated is the fixed creation time of every model.
const modelCreated = 1700000000

func appendModel(b []byte, id string) []byte {
	b = append(b, `{"id":`...)
	b = appendString(b, id)
	b = append(b, `,"object":"model","created":`...)
	b = appendInt(b, modelCreated)
	return append(b, `,"owned_by":"relaytest"}`...)
}

// models answers GET /models.
func (x *exchange) models() {
	b := append(make([]byte, 0, 256), `{"object":"list","data":[`...)
	for i, m := range models {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendModel(b, m)
	}
	x.writeJSON(append(b, "]}\n"...), statusCompleted)
}

// model answers GET /models/{id}.
func (x *exchange) model(id string) {
	for _, m := range models {
		if m == id {
			x.writeJSON(append(appendModel(nil, id), '\n'), statusCompleted)
			return
		}
	}
	x.writeError(&apiError{status: 404, typ: typeInvalidRequest, code: "model_not_found",
		msg: "The model '" + id + "' does not exist"})
}
