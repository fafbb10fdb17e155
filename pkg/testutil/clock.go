package testutil

import (
	"sync"
	"testing"
	"time"
)

// FakeClock never sleeps: After hands each wait to the test, which fires
// it (or not) through the wait's channel. It satisfies tunnel.Clock.
type FakeClock struct {
	mu    sync.Mutex
	now   time.Time
	waits chan FakeWait
}

// FakeWait is one wait asked of a FakeClock: its duration and the channel
// that fires it.
type FakeWait struct {
	D    time.Duration
	Fire chan time.Time
}

// NewFakeClock starts at a fixed time.
func NewFakeClock() *FakeClock {
	return &FakeClock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), waits: make(chan FakeWait, 64)}
}

// Now is the clock's time.
func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock's time.
func (c *FakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// After records a wait for the test to fire.
func (c *FakeClock) After(d time.Duration) <-chan time.Time {
	w := FakeWait{D: d, Fire: make(chan time.Time, 1)}
	c.waits <- w
	return w.Fire
}

// Next returns the next wait asked for, failing the test if none comes
// within bound.
func (c *FakeClock) Next(t testing.TB, bound time.Duration) FakeWait {
	t.Helper()
	select {
	case w := <-c.waits:
		return w
	case <-time.After(bound):
		t.Fatal("no wait was asked for")
		return FakeWait{}
	}
}

// Waits is the channel of waits asked for and not yet taken by Next.
func (c *FakeClock) Waits() <-chan FakeWait { return c.waits }
