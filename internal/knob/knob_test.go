package knob

import (
	"testing"
	"time"
)

func TestOr(t *testing.T) {
	if got := Or(0, 7); got != 7 {
		t.Errorf("Or(0, 7) = %d, want the default", got)
	}
	if got := Or(3, 7); got != 3 {
		t.Errorf("Or(3, 7) = %d, want the value", got)
	}
	if got := Or(-1, 7); got != -1 {
		t.Errorf("Or(-1, 7) = %d, want -1 passed through", got)
	}
	if got := Or(time.Duration(0), time.Hour); got != time.Hour {
		t.Errorf("Or for a Duration = %s", got)
	}
	if got := Or(int64(-5), 1); got != -5 {
		t.Errorf("Or for an int64 = %d", got)
	}
}

func TestPositive(t *testing.T) {
	if got := Positive("TopK", 0, 7); got != 7 {
		t.Errorf("Positive(0) = %d, want the default", got)
	}
	if got := Positive("TopK", 2, 7); got != 2 {
		t.Errorf("Positive(2) = %d", got)
	}
	defer func() {
		r := recover()
		if r != "responsesrelay: Scheduler.TopK must not be negative" {
			t.Errorf("panic %v, want one naming the field", r)
		}
	}()
	Positive("Scheduler.TopK", -1, 7)
	t.Error("a negative value did not panic")
}
