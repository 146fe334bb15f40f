package billing_test

import (
	"sync"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/internal/ledgertest"
	"github.com/relaykit/responsesrelay/internal/testclock"
)

// MemoryLedger passes the conformance suite; its two instances are one
// ledger, as two callers in one process share it.
func TestMemoryLedgerConformance(t *testing.T) {
	var (
		mu     sync.Mutex
		clocks = map[billing.Ledger]*testclock.Clock{}
	)
	newLedger := func(t *testing.T) billing.Ledger {
		c := testclock.New(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
		l := &billing.MemoryLedger{HoldTTL: 10 * time.Minute, Now: c.Now}
		mu.Lock()
		clocks[l] = c
		mu.Unlock()
		return l
	}
	ledgertest.Run(t, newLedger, ledgertest.Options{
		Shared: func(t *testing.T) (a, b billing.Ledger) {
			l := new(billing.MemoryLedger) // the zero value, on the real clock
			return l, l
		},
		HoldTTL: 10 * time.Minute,
		Advance: func(l billing.Ledger, d time.Duration) {
			mu.Lock()
			defer mu.Unlock()
			clocks[l].Advance(d)
		},
	})
}
