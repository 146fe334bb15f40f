package billing

import (
	"context"
	"slices"
	"sync"
)

// MemorySink is a UsageSink that keeps every record in memory, in arrival
// order. It suits tests and small tools; the zero value is ready to use
// and it is safe for concurrent use.
type MemorySink struct {
	mu      sync.Mutex
	records []Usage
	changed chan struct{} // closed and reset by each Record; made on demand
}

// Record appends u. It never fails.
func (s *MemorySink) Record(_ context.Context, u Usage) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records = append(s.records, u)
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
	return nil
}

// Records returns a copy of the records kept so far.
func (s *MemorySink) Records() []Usage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.records)
}

// WaitLen blocks until at least n records were kept or ctx ends; it lets a
// test wait for records written after its request returned.
func (s *MemorySink) WaitLen(ctx context.Context, n int) error {
	for {
		s.mu.Lock()
		if len(s.records) >= n {
			s.mu.Unlock()
			return nil
		}
		if s.changed == nil {
			s.changed = make(chan struct{})
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
