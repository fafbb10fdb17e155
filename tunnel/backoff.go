package tunnel

import (
	"context"
	"math/rand/v2"
	"time"
)

// Clock is the time source of Backoff; tests swap it so they never sleep.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Backoff is exponential backoff with full jitter: the n-th wait is uniform
// in [0, min(Max, Base·2ⁿ)], so a fleet that lost its hub at once does not
// come back in lockstep. A connection that stayed up for ResetAfter counts as
// healthy and starts the sequence over.
type Backoff struct {
	Base       time.Duration
	Max        time.Duration
	ResetAfter time.Duration
	Clock      Clock
	// Jitter returns a value in [0, n]; nil uses math/rand/v2.
	Jitter func(n int64) int64

	attempt int
}

// DefaultBackoff starts near a second and caps at a minute.
func DefaultBackoff() *Backoff {
	return &Backoff{Base: time.Second, Max: time.Minute, ResetAfter: 2 * time.Minute}
}

// Next returns the next wait and advances the sequence.
func (b *Backoff) Next() time.Duration {
	ceil := b.Base
	for i := 0; i < b.attempt && ceil < b.Max; i++ {
		ceil *= 2
	}
	if ceil > b.Max {
		ceil = b.Max
	}
	b.attempt++
	return b.jitter(ceil)
}

// jitter returns a wait uniform in [0, d].
func (b *Backoff) jitter(d time.Duration) time.Duration {
	if b.Jitter == nil {
		return time.Duration(rand.Int64N(int64(d) + 1))
	}
	return time.Duration(b.Jitter(int64(d)))
}

// Floor makes the next wait at least d (used after permanent refusals, so a
// wrong token costs the hub one request per d, not a hot loop).
func (b *Backoff) Floor(d time.Duration) time.Duration {
	w := b.Next()
	if w < d {
		w = d
	}
	return w
}

// RetryAfter is the next wait after the hub said to come back in d (a
// Retry-After): at least d plus a jitter of up to d/2, so that the agents a
// replica turned away together do not return together; the normal backoff
// when that is longer. The sequence advances as for any failure.
func (b *Backoff) RetryAfter(d time.Duration) time.Duration {
	return max(b.Next(), d+b.jitter(d/2))
}

// Reset starts the sequence over.
func (b *Backoff) Reset() { b.attempt = 0 }

// Connected records that a connection lasted from since until now, and
// resets the sequence when that was long enough to count as stable.
func (b *Backoff) Connected(since time.Time) {
	if b.clock().Now().Sub(since) >= b.ResetAfter {
		b.Reset()
	}
}

// Sleep waits d or until ctx ends.
func (b *Backoff) Sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-b.clock().After(d):
		return nil
	}
}

func (b *Backoff) clock() Clock {
	if b.Clock == nil {
		return realClock{}
	}
	return b.Clock
}
