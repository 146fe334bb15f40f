package relay_test

import (
	"time"

	"github.com/relaykit/responsesrelay/scheduler"
)

// accountState is an account's entry in the Scheduler's Snapshot; the zero
// AccountState when it is not listed.
func accountState(s *scheduler.Scheduler, id string) scheduler.AccountState {
	for _, as := range s.Snapshot() {
		if as.ID == id {
			return as
		}
	}
	return scheduler.AccountState{}
}

// schedInFlight is how many Selections of the account s has not released.
func schedInFlight(s *scheduler.Scheduler, id string) int { return accountState(s, id).InFlight }

// coolingUntil is the end of the account's cooldown; zero when not cooling.
func coolingUntil(s *scheduler.Scheduler, id string) time.Time {
	return accountState(s, id).CoolingUntil
}
