package hookcall

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

func TestSafe(t *testing.T) {
	want := errors.New("hook failed")
	if err := Safe(context.Background(), func(context.Context) error { return want }); err != want {
		t.Errorf("Safe = %v, want the hook's error", err)
	}
	err := Safe(context.Background(), func(context.Context) error { panic("boom") })
	var pe *PanicError
	if !errors.As(err, &pe) || pe.Value != "boom" {
		t.Errorf("Safe after a panic = %v, want a *PanicError carrying the value", err)
	}
}

func TestBoundedReturnsResult(t *testing.T) {
	want := errors.New("hook failed")
	late := func(error) { t.Error("late called for a hook that returned in time") }
	if err := Bounded(context.Background(), time.Hour, func(context.Context) error { return want }, late); err != want {
		t.Errorf("Bounded = %v, want the hook's error", err)
	}
	err := Bounded(context.Background(), 0, func(context.Context) error { panic("boom") }, late)
	var pe *PanicError
	if !errors.As(err, &pe) {
		t.Errorf("Bounded after a panic = %v, want a *PanicError", err)
	}
}

// A hook that ignores its context is left behind at the timeout; late
// gets its result once it returns, and its context has ended by then.
func TestBoundedTimeout(t *testing.T) {
	leakcheck.Check(t)
	release := make(chan struct{})
	ctxErr := make(chan error, 1)
	lateErr := make(chan error, 1)
	want := errors.New("late result")
	err := Bounded(context.Background(), time.Millisecond, func(ctx context.Context) error {
		<-release
		ctxErr <- ctx.Err()
		return want
	}, func(err error) { lateErr <- err })
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("Bounded = %v, want ErrTimeout", err)
	}
	close(release)
	if got := <-lateErr; got != want {
		t.Errorf("late got %v, want the hook's result", got)
	}
	if got := <-ctxErr; !errors.Is(got, context.DeadlineExceeded) {
		t.Errorf("the abandoned hook's context: %v, want it ended", got)
	}
}

func TestBoundedContextEnds(t *testing.T) {
	leakcheck.Check(t)
	ctx, cancel := context.WithCancel(context.Background())
	release := make(chan struct{})
	started := make(chan struct{})
	lateDone := make(chan struct{})
	go func() { <-started; cancel() }()
	err := Bounded(ctx, time.Hour, func(context.Context) error {
		close(started)
		<-release
		panic("late panic")
	}, func(err error) {
		defer close(lateDone)
		var pe *PanicError
		if !errors.As(err, &pe) {
			t.Errorf("late got %v, want the late panic", err)
		}
		panic("late itself panics")
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Bounded = %v, want ctx.Err()", err)
	}
	close(release)
	<-lateDone // a panic in late did not crash the test binary
}

// Go returns fn's result, a panic as a *PanicError, and never blocks the
// goroutine when nobody reads the result.
func TestGo(t *testing.T) {
	want := errors.New("store down")
	if err := <-Go(context.Background(), func(context.Context) error { return want }); err != want {
		t.Fatalf("Go = %v, want the call's error", err)
	}
	var pe *PanicError
	if err := <-Go(context.Background(), func(context.Context) error { panic("boom") }); !errors.As(err, &pe) {
		t.Fatalf("Go after a panic = %v", err)
	}
	ran := make(chan struct{})
	Go(context.Background(), func(context.Context) error { close(ran); return nil }) // result never read
	<-ran                                                                            // the leak check at exit sees the goroutine end
}
