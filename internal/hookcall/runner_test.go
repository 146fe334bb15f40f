package hookcall

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/internal/leakcheck"
)

// Pings come while the call waits; the call's own result is returned.
func TestRunnerPingsWhileWaiting(t *testing.T) {
	leakcheck.Check(t)
	var r Runner
	defer r.End()
	release := make(chan struct{})
	pings := 0
	want := errors.New("hook result")
	err := r.Call(context.Background(), 0, func(context.Context) error {
		<-release
		return want
	}, nil, func() {
		if pings++; pings == 3 {
			close(release)
		}
	}, time.Millisecond)
	if err != want {
		t.Fatalf("Call = %v, want the hook's result", err)
	}
	if pings < 3 {
		t.Errorf("%d pings, want at least 3 (the hook returned only after the third)", pings)
	}
}

// A call past its bound is abandoned: late gets its result, and the
// runner (its timer, its pooled calls) serves the next call normally.
func TestRunnerAbandonsLateCall(t *testing.T) {
	leakcheck.Check(t)
	var r Runner
	defer r.End()
	release := make(chan struct{})
	lateErr := make(chan error, 1)
	want := errors.New("late result")
	err := r.Call(context.Background(), time.Millisecond, func(context.Context) error {
		<-release
		return want
	}, func(err error) { lateErr <- err }, nil, 0)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("Call = %v, want ErrTimeout", err)
	}
	close(release)
	if got := <-lateErr; got != want {
		t.Errorf("late got %v, want the abandoned hook's result", got)
	}
	if err := r.Call(context.Background(), time.Hour, func(context.Context) error { panic("boom") }, nil, nil, 0); !errors.As(err, new(*PanicError)) {
		t.Errorf("next Call = %v, want the hook's panic as *PanicError", err)
	}
}

func TestRunnerContextEnds(t *testing.T) {
	leakcheck.Check(t)
	var r Runner
	defer r.End()
	ctx, cancel := context.WithCancel(context.Background())
	started, release := make(chan struct{}), make(chan struct{})
	go func() { <-started; cancel() }()
	err := r.Call(ctx, time.Hour, func(context.Context) error {
		close(started)
		<-release
		return nil
	}, nil, nil, 0)
	close(release)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Call = %v, want ctx.Err()", err)
	}
}

type ctxKey struct{}

// The detached context keeps the parent's values, outlives it, and ends
// with the runner.
func TestRunnerDetached(t *testing.T) {
	var r Runner
	parent, cancel := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, "v"))
	cancel()
	d := r.Detached(parent)
	if d.Err() != nil || d.Value(ctxKey{}) != "v" {
		t.Fatalf("detached context: err %v, value %v; want live, with the parent's value", d.Err(), d.Value(ctxKey{}))
	}
	if r.Detached(context.Background()) != d {
		t.Error("a second Detached made a new context")
	}
	r.End()
	if d.Err() == nil {
		t.Error("the detached context outlived End")
	}
}
