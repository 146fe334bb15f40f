package relaytest

import "slices"

// stored is what the fake remembers of a response created with store:true.
type stored struct {
	id      string
	prev    *stored
	usage   Usage
	inCalls []string // call_ids of function_call items in its input
	outCall string   // call_id of its function call output, "" for text
	itemID  string
	sealed  string   // id of its reasoning or compaction item, "" when none
	t       *turn    // for retrieval and replay
	bg      *job     // its background work; nil when not in background mode
	items   []string // its input items with ids, made at the first listing; guarded by Upstream.mu
}

// maxStored bounds the responses kept per account so that long benchmarks
// do not grow without limit, and maxStoredBytes the request bodies they
// keep (for retrieval and input_items); the oldest are forgotten first.
const (
	maxStored      = 1 << 16
	maxStoredBytes = 256 << 20
)

// resolve finds the previous response and checks function call outputs
// against what the account knows, as the real API does. local is a
// WebSocket's connection-local response (nil over HTTP); it resolves even
// when it was not stored.
func (u *Upstream) resolve(a *account, q *request, local *stored) (*stored, *apiError) {
	u.mu.Lock()
	defer u.mu.Unlock()
	var prev *stored
	if q.prevID != "" {
		prev = a.store[q.prevID]
		if local != nil && local.id == q.prevID {
			prev = local
		}
		if prev == nil {
			return nil, &apiError{status: 400, typ: typeInvalidRequest, param: "previous_response_id",
				code: "previous_response_not_found", msg: "Previous response with id '" + q.prevID + "' not found."}
		}
		if prev.outCall != "" && !slices.Contains(q.outputs, prev.outCall) {
			return nil, &apiError{status: 400, typ: typeInvalidRequest, param: "input",
				msg: "No tool output found for function call " + prev.outCall + "."}
		}
	}
	if e := a.checkSealed(q); e != nil {
		return nil, e
	}
	for _, id := range q.outputs {
		if !slices.Contains(q.calls, id) && !prev.knows(id) && !a.referenced(q.refs, id) {
			return nil, &apiError{status: 400, typ: typeInvalidRequest, param: "input",
				msg: "No tool call found for function call output with call_id " + id + "."}
		}
	}
	return prev, nil
}

// knows reports whether call id appears in the chain ending at s.
func (s *stored) knows(id string) bool {
	for ; s != nil; s = s.prev {
		if s.outCall == id || slices.Contains(s.inCalls, id) {
			return true
		}
	}
	return false
}

// referenced reports whether one of the item references is a stored
// function call with call id.
func (a *account) referenced(refs []string, id string) bool {
	for _, r := range refs {
		if a.items[r] == id {
			return true
		}
	}
	return false
}

// newStored is what later turns need to know of t's response.
func newStored(t *turn, prev *stored) *stored {
	s := &stored{id: t.id, prev: prev, usage: t.usage, inCalls: t.req.calls, t: t}
	if t.fc {
		s.outCall, s.itemID = t.callID, t.itemID
	}
	if t.lead != 0 {
		s.sealed = t.leadID
	}
	return s
}

// save stores s for later previous_response_id lookups.
func (u *Upstream) save(a *account, s *stored) {
	u.mu.Lock()
	defer u.mu.Unlock()
	a.store[s.id] = s
	if s.itemID != "" {
		a.items[s.itemID] = s.outCall
	}
	if s.sealed != "" {
		a.sealed[s.sealed] = struct{}{}
	}
	a.order = append(a.order, s.id)
	a.kept += s.size()
	for len(a.order) > maxStored || (a.kept > maxStoredBytes && len(a.order) > 1) {
		a.forget(a.order[0])
		a.order = a.order[1:]
	}
}

// forget drops the stored response id. u.mu must be held.
func (a *account) forget(id string) {
	if old := a.store[id]; old != nil {
		a.kept -= old.size()
		delete(a.store, id)
		delete(a.items, old.itemID)
		delete(a.sealed, old.sealed)
	}
}

// size is what s keeps of its request: the body the turn refers to.
func (s *stored) size() int {
	if s.t == nil {
		return 0
	}
	return s.t.req.size
}
