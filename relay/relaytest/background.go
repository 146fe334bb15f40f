package relaytest

import (
	"context"
	"errors"
)

// Background mode: a create with "background": true is answered at once
// and its events are produced by a goroutine of the Upstream, the job,
// which the create's own stream and later retrievals follow.

// job is the background work of a response. Its fields other than stop
// are guarded by Upstream.mu.
type job struct {
	n       int           // events produced so far
	over    bool          // no more events: finished, cancelled, deleted, or the server closed
	status  string        // queued, in_progress, the turn's final status, or cancelled
	changed chan struct{} // closed and replaced at every change
	stop    context.CancelFunc
}

// notifyLocked wakes the job's followers and Upstream.Wait. u.mu must be
// held.
func (j *job) notifyLocked(u *Upstream) {
	close(j.changed)
	j.changed = make(chan struct{})
	u.notifyLocked()
}

// endLocked stops the job's events with status, unless it is already
// over. u.mu must be held.
func (j *job) endLocked(u *Upstream, status string) {
	if !j.over {
		j.over, j.status = true, status
		j.notifyLocked(u)
	}
}

// background stores t as a background response, starts its job and
// answers: the object with status queued, or its events as the job
// produces them when the request streams.
func (x *exchange) background(t *turn, prev *stored) {
	u := x.u
	// Step.Cut acted before anything or not at all: the job has no
	// connection to cut.
	t.step.Cut = false
	st := newStored(t, prev)
	ctx, stop := context.WithCancel(u.ctx)
	st.bg = &job{n: 1, status: statusQueued, changed: make(chan struct{}), stop: stop}
	u.save(x.acct, st)
	x.served.ResponseID = t.id
	u.handlers.Add(1) // within a handler: Close waits for the job too
	go u.work(ctx, st)
	if t.req.stream {
		x.follow(st, 0)
		return
	}
	x.writeJSON(append(t.appendObject(nil, statusQueued, false, nil), '\n'), statusQueued)
}

// work produces the events of a background response: it waits for
// Step.Hold when After is 0, then plays the turn with the step's pacing.
func (u *Upstream) work(ctx context.Context, st *stored) {
	defer u.handlers.Done()
	j, t := st.bg, st.t
	s := t.step
	stopped := s.After == 0 && s.Hold != nil && !u.wait(ctx, s.Hold, 0)
	if !stopped {
		stopped = u.play(ctx, t, &jobSink{u: u, j: j}, func(int) {})
	}
	u.mu.Lock()
	if stopped {
		// Cancelled, deleted, or the server closed: the status stays.
		j.endLocked(u, j.status)
	} else {
		j.endLocked(u, t.final)
	}
	u.mu.Unlock()
	j.stop()
}

var errJobOver = errors.New("relaytest: background job over")

// jobSink counts the events a job produces; followers render them.
type jobSink struct {
	u *Upstream
	j *job
}

func (s *jobSink) writeEvent(_ *turn, _ planned, seq int) error {
	s.u.mu.Lock()
	defer s.u.mu.Unlock()
	j := s.j
	if j.over {
		return errJobOver
	}
	j.n = max(j.n, seq+1)
	if j.n > 1 {
		j.status = statusInProgress
	}
	j.notifyLocked(s.u)
	return nil
}

// state reads a stored response's status and produced events: those of its
// job, or, without one, the whole turn as decided ("" status).
func (u *Upstream) state(st *stored) (status string, n int, over bool, changed <-chan struct{}) {
	j := st.bg
	if j == nil {
		return "", len(st.t.plan), true, nil
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	return j.status, j.n, j.over, j.changed
}

// appendStored appends the response object of st in the given state.
func (st *stored) appendStored(b []byte, status string, n int) []byte {
	t := st.t
	switch status {
	case statusQueued, statusInProgress:
		return t.appendObject(b, status, false, nil)
	case statusCancelled:
		use := t.partialUsage(n)
		return t.appendObject(b, status, false, &use)
	}
	return t.appendResponse(b, t.final, !t.early)
}

// partialUsage is the usage of the first n events of t: the input once
// in progress, and one output token per delta.
func (t *turn) partialUsage(n int) Usage {
	var use Usage
	if n > 1 {
		use.Input, use.Cached = t.usage.Input, t.usage.Cached
	}
	for _, e := range t.plan[:min(n, len(t.plan))] {
		if e.kind == evTextDelta || e.kind == evArgsDelta {
			use.Output++
		}
	}
	return use
}

// follow streams the events of st from index from: all at once for a
// response without a job, else as its job produces them, until the job
// is over. The stream ends without a terminal event when the job was
// cancelled or deleted.
func (x *exchange) follow(st *stored, from int) {
	t := st.t
	x.header(hdrEventStream, 200)
	x.w.Header()["Cache-Control"] = hdrNoCache
	x.w.WriteHeader(200)
	sink := newSSESink(x.w, t)
	ctx := x.r.Context()
	i, written := max(from, 0), 0
	settle := func(status string, n, events int) {
		x.served.Events = events
		switch {
		case status == statusCancelled:
			x.finish(statusCancelled)
		case status == statusQueued || status == statusInProgress:
			x.finish(statusAborted) // the server closed
		default:
			if from < n {
				x.served.Usage = t.servedUsage(n)
			}
			if s := t.servedStatus(n); s == statusFailed || s == statusError {
				x.served.Code = t.failCode
			}
			x.finish(t.servedStatus(n))
		}
	}
	for {
		status, n, over, changed := x.u.state(st)
		if i >= n && over {
			settle(status, n, written)
			return
		}
		for ; i < n; i++ {
			if over && i == n-1 {
				settle(status, n, written+1) // before the last write, as documented on Served
			}
			if err := sink.writeEvent(t, t.plan[i], i); err != nil {
				x.served.Events = written
				x.abort(false)
				return
			}
			written++
		}
		if over {
			return
		}
		select {
		case <-changed:
		case <-ctx.Done():
			x.served.Events = written
			x.abort(false)
			return
		case <-x.u.closing:
			x.served.Events = written
			x.abort(false)
			return
		}
	}
}
