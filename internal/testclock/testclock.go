// Package testclock is a hand-moved time source for tests, safe for
// concurrent use: time passes only when the test says so.
package testclock

import (
	"sync"
	"time"
)

// Clock reads the time it was set to. Its methods may be called from any
// goroutine.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// New returns a Clock reading t.
func New(t time.Time) *Clock { return &Clock{t: t} }

// Now is the time the clock is at; a method value of it serves as a
// func() time.Time option.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock on by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// Set moves the clock to t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}
