package relay

import "testing"

func TestRouteOf(t *testing.T) {
	for path, want := range map[string]route{
		"/v1/responses":                        {kind: routeCreate},
		"/v1/responses/":                       {kind: routeCreate},
		"/api/openai/v1/responses":             {kind: routeCreate},
		"/v1/responses/resp_1":                 {kind: routeResponse, id: "resp_1"},
		"/v1/responses/resp_1/input_items":     {kind: routeInputItems, id: "resp_1"},
		"/v1/responses/resp_1/cancel":          {kind: routeCancel, id: "resp_1"},
		"/v1/responses/input_tokens":           {kind: routeInputTokens},
		"/v1/responses/compact":                {kind: routeCompact},
		"/v1/responses/resp_1/other":           {},
		"/v1/responsesX":                       {},
		"/v1/models":                           {kind: routeModels},
		"/v1/models/gpt-5":                     {kind: routeModel, id: "gpt-5"},
		"/v1/models/openai/gpt-4o":             {kind: routeModel, id: "openai/gpt-4o"},
		"/v1/chat/completions":                 {},
		"/responses-archive/v1/responses/r":    {kind: routeResponse, id: "r"},
		"/v1/responses/resp_1/input_items/x/y": {},
	} {
		if got := routeOf(path); got != want {
			t.Errorf("routeOf(%q) = %+v, want %+v", path, got, want)
		}
	}
}
