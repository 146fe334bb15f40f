package scheduler

import "time"

// InFlight is how many Selections of the account are not yet released by
// this Scheduler.
func (s *Scheduler) InFlight(accountID string) int {
	s.init()
	if st := s.lookup(accountID); st != nil {
		return int(st.inflight.Load())
	}
	return 0
}

// CoolingUntil is when the account's cooldown ends, or the zero Time when it
// is not cooling down.
func (s *Scheduler) CoolingUntil(accountID string) time.Time {
	s.init()
	st := s.lookup(accountID)
	if st == nil {
		return time.Time{}
	}
	if u := st.coolUntil.Load(); u > s.now().UnixNano() {
		return time.Unix(0, u)
	}
	return time.Time{}
}
