package relay

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/relaykit/responsesrelay/internal/jsonx"
	"github.com/relaykit/responsesrelay/scheduler"
)

// serveModels answers GET …/models (the list) and GET …/models/{model}
// in OpenAI's shapes, from the accounts of the caller's group.
func (h *Handler) serveModels(w http.ResponseWriter, r *http.Request, rt route) {
	subj, err := h.authenticate(r, nil)
	if err != nil {
		writeJSONError(w, authAnswer(err))
		return
	}
	var accounts []*scheduler.Account
	err = h.bounded(r.Context(), func(ctx context.Context) error {
		var err error
		accounts, err = h.Scheduler.Pool.Accounts(ctx, subj.GroupID)
		return err
	})
	if err != nil {
		h.log.Error("relay: listing the accounts for the models failed", "group", subj.GroupID, "error", err)
		writeJSONError(w, &APIError{Status: http.StatusServiceUnavailable, Type: "server_error",
			Message: "Could not list the models, please retry later", RetryAfter: time.Second})
		return
	}
	names := modelNames(accounts)
	if h.Models != nil {
		err := h.bounded(r.Context(), func(ctx context.Context) error {
			names = h.Models(ctx, subj, names)
			return nil
		})
		if err != nil {
			h.log.Error("relay: the Models hook failed", "error", err)
			writeJSONError(w, &APIError{Status: http.StatusServiceUnavailable, Type: "server_error",
				Message: "Could not list the models, please retry later", RetryAfter: time.Second})
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	if rt.kind == routeModel {
		if !slices.Contains(names, rt.id) {
			writeJSONError(w, &APIError{Status: http.StatusNotFound, Type: "invalid_request_error",
				Message: "The model '" + rt.id + "' does not exist", Code: "model_not_found"})
			return
		}
		w.Write(appendModel(nil, rt.id))
		return
	}
	b := append(make([]byte, 0, 64+64*len(names)), `{"object":"list","data":[`...)
	for i, n := range names {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendModel(b, n)
	}
	w.Write(append(b, "]}"...))
}

// modelNames lists, sorted and once each, the exact model names the
// accounts serve: their Models without wildcards, and their ModelMap keys.
// An account with no Models serves any name: it adds only its map's keys.
func modelNames(accounts []*scheduler.Account) []string {
	var names []string
	for _, a := range accounts {
		for _, m := range a.Models {
			if !strings.ContainsAny(m, "*?[\\") {
				names = append(names, m)
			}
		}
		for m := range a.ModelMap {
			if a.Serves(m) {
				names = append(names, m)
			}
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// appendModel appends one model object. created is 0: the relay does not
// know when a model was made upstream.
func appendModel(b []byte, name string) []byte {
	b = append(b, `{"id":`...)
	b = jsonx.AppendString(b, name)
	return append(b, `,"object":"model","created":0,"owned_by":"responsesrelay"}`...)
}
