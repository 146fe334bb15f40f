package billing

import (
	"strings"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

func TestAsyncOptionsDefaults(t *testing.T) {
	got := DeliveryOptions{}.forAsync()
	want := DeliveryOptions{Workers: 4, QueueSize: 1024, EnqueueTimeout: time.Second, AttemptTimeout: 10 * time.Second,
		MaxRetries: 5, RetryBase: 100 * time.Millisecond, RetryMax: 5 * time.Second,
		MaxBatch: 128, BatchWait: 5 * time.Millisecond}
	if got.Workers != want.Workers || got.QueueSize != want.QueueSize || got.EnqueueTimeout != want.EnqueueTimeout ||
		got.AttemptTimeout != want.AttemptTimeout || got.MaxRetries != want.MaxRetries ||
		got.RetryBase != want.RetryBase || got.RetryMax != want.RetryMax ||
		got.MaxBatch != want.MaxBatch || got.BatchWait != want.BatchWait {
		t.Fatalf("defaults = %+v, want %+v", got, want)
	}
	neg := DeliveryOptions{MaxRetries: -1, EnqueueTimeout: -1, AttemptTimeout: -1, RetryBase: time.Minute,
		MaxBatch: -1, BatchWait: -1}.forAsync()
	if neg.MaxRetries != 0 || neg.EnqueueTimeout >= 0 || neg.AttemptTimeout >= 0 || neg.MaxBatch >= 0 || neg.BatchWait >= 0 {
		t.Fatalf("negative options must mean none: %+v", neg)
	}
	if neg.RetryMax != time.Minute {
		t.Fatalf("RetryMax = %v, want raised to RetryBase (1m)", neg.RetryMax)
	}
}

func TestBackoffDoublesWithJitterUpToMax(t *testing.T) {
	a := &Async{o: DeliveryOptions{RetryBase: 100 * time.Millisecond, RetryMax: time.Second}}
	for failed, step := range map[int]time.Duration{
		1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 3: 400 * time.Millisecond,
		4: 800 * time.Millisecond, 5: time.Second, 60: time.Second,
	} {
		seen := map[time.Duration]bool{}
		for range 200 {
			d := a.backoff(failed)
			if d < step/2 || d > step {
				t.Fatalf("backoff(%d) = %v, want within [%v, %v]", failed, d, step/2, step)
			}
			seen[d] = true
		}
		if len(seen) < 2 {
			t.Fatalf("backoff(%d) has no jitter: always %v", failed, seen)
		}
	}
}

func TestDeliveryOptionsNegativePanics(t *testing.T) {
	for name, f := range map[string]func(){
		"Workers":   func() { DeliveryOptions{Workers: -1}.forAsync() },
		"QueueSize": func() { DeliveryOptions{QueueSize: -1}.forAsync() },
	} {
		got := func() (p any) {
			defer func() { p = recover() }()
			f()
			return nil
		}()
		if msg, _ := got.(string); !strings.Contains(msg, "billing.DeliveryOptions."+name+" must not be negative") {
			t.Errorf("negative %s: panic %v", name, got)
		}
	}
}
