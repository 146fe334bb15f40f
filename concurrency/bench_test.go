package concurrency_test

import (
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/relaykit/responsesrelay/concurrency"
)

func BenchmarkTryAcquireRelease(b *testing.B) {
	b.Run("uncontended", func(b *testing.B) {
		m := concurrency.NewMemory()
		b.ReportAllocs()
		for b.Loop() {
			release, ok, _ := m.TryAcquire(bg, "user:1", 10)
			if !ok {
				b.Fatal("refused")
			}
			release()
		}
	})
	// Each goroutine its own key: the cost of the shared mutex.
	b.Run("parallel-keys", func(b *testing.B) {
		m := concurrency.NewMemory()
		var next atomic.Int64
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			key := "user:" + strconv.FormatInt(next.Add(1), 10)
			for pb.Next() {
				release, ok, _ := m.TryAcquire(bg, key, 10)
				if !ok {
					b.Error("refused")
					return
				}
				release()
			}
		})
	})
	// All goroutines on one key at its limit: refusals included.
	b.Run("parallel-one-key", func(b *testing.B) {
		m := concurrency.NewMemory()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if release, ok, _ := m.TryAcquire(bg, "account:1", 4); ok {
					release()
				}
			}
		})
	})
}

func BenchmarkAcquireHandOff(b *testing.B) {
	m := concurrency.NewMemory()
	o := concurrency.WaitOptions{MaxWaiters: 1 << 20}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			release, err := m.Acquire(bg, "hot", 1, o)
			if err != nil {
				b.Error(err)
				return
			}
			release()
		}
	})
}
