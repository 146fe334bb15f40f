package conversation

import "time"

// SetClock makes m read time from now, so that tests move it by hand.
func SetClock(m *Memory, now func() time.Time) { m.now = now }
