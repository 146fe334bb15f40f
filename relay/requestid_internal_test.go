package relay

import (
	"regexp"
	"testing"
	"time"
)

// Request ids are "rr_" and 32 hex digits, distinct, and an id made in a
// later millisecond sorts after every id of an earlier one (a database
// keyed by them appends).
func TestRequestIDsSortByTime(t *testing.T) {
	format := regexp.MustCompile(`^rr_[0-9a-f]{32}$`)
	seen := map[string]bool{}
	var prev []string
	for range 5 {
		var batch []string
		for range 200 {
			id := newRequestID()
			if !format.MatchString(id) || seen[id] {
				t.Fatalf("id %q: malformed or repeated", id)
			}
			seen[id] = true
			batch = append(batch, id)
		}
		// The next batch starts in a later millisecond than this one
		// ended (the clock, not another goroutine, is waited for).
		end := time.Now().UnixMilli()
		for time.Now().UnixMilli() <= end {
			time.Sleep(time.Millisecond)
		}
		for _, p := range prev {
			for _, id := range batch {
				if id <= p {
					t.Fatalf("%s, made later, sorts before %s", id, p)
				}
			}
		}
		prev = batch
	}
}
