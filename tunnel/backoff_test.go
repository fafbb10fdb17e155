package tunnel

import (
	"context"
	"testing"
	"time"

	"backhaul.io/backhaul/pkg/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ceilingJitter returns the ceiling itself, making Next report it.
func ceilingJitter(n int64) int64 { return n }

func TestBackoffCeiling(t *testing.T) {
	tests := []struct {
		name string
		base time.Duration
		max  time.Duration
		want []time.Duration
	}{
		{
			name: "doubles to the cap and stays",
			base: time.Second, max: time.Minute,
			want: []time.Duration{1, 2, 4, 8, 16, 32, 60, 60, 60},
		},
		{
			name: "cap not a power of two of base",
			base: 3 * time.Second, max: 10 * time.Second,
			want: []time.Duration{3, 6, 10, 10},
		},
		{
			name: "base above max is capped",
			base: 2 * time.Minute, max: time.Minute,
			want: []time.Duration{60, 60},
		},
		{
			name: "base equals max",
			base: time.Minute, max: time.Minute,
			want: []time.Duration{60, 60, 60},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var seen []int64
			b := &Backoff{Base: tc.base, Max: tc.max, ResetAfter: time.Hour, Clock: testutil.NewFakeClock(), Jitter: func(n int64) int64 {
				seen = append(seen, n)
				return n
			}}
			for i, w := range tc.want {
				assert.Equal(t, w*time.Second, b.Next(), "wait %d", i)
			}
			for i, n := range seen {
				assert.Equal(t, int64(tc.want[i]*time.Second), n, "Jitter got the ceiling for wait %d", i)
			}
		})
	}
}

func TestBackoffManyAttemptsStayCapped(t *testing.T) {
	b := &Backoff{Base: time.Second, Max: time.Minute, Jitter: ceilingJitter}
	for range 10000 {
		b.Next()
	}
	assert.Equal(t, time.Minute, b.Next())
}

// TestBackoffFullJitter: with the default jitter every wait lies in
// [0, ceiling], and the jitter function sees exactly the ceiling.
func TestBackoffFullJitter(t *testing.T) {
	b := &Backoff{Base: 10 * time.Millisecond, Max: 80 * time.Millisecond}
	ceilings := []time.Duration{10, 20, 40, 80, 80}
	for range 200 {
		b.Reset()
		for i, c := range ceilings {
			w := b.Next()
			assert.GreaterOrEqual(t, w, time.Duration(0), "wait %d", i)
			assert.LessOrEqual(t, w, c*time.Millisecond, "wait %d", i)
		}
	}

	t.Run("both ends reachable", func(t *testing.T) {
		for _, tc := range []struct {
			name   string
			jitter func(int64) int64
			want   time.Duration
		}{
			{name: "zero", jitter: func(int64) int64 { return 0 }, want: 0},
			{name: "ceiling", jitter: ceilingJitter, want: 10 * time.Millisecond},
		} {
			t.Run(tc.name, func(t *testing.T) {
				b := &Backoff{Base: 10 * time.Millisecond, Max: time.Second, Jitter: tc.jitter}
				assert.Equal(t, tc.want, b.Next())
			})
		}
	})
}

func TestBackoffConnectedResets(t *testing.T) {
	tests := []struct {
		name   string
		lasted time.Duration
		want   time.Duration
	}{
		{name: "stable connection starts over", lasted: 2 * time.Minute, want: time.Second},
		{name: "longer than stable starts over", lasted: time.Hour, want: time.Second},
		{name: "short connection keeps backing off", lasted: 2*time.Minute - time.Nanosecond, want: 8 * time.Second},
		{name: "instant drop keeps backing off", lasted: 0, want: 8 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := testutil.NewFakeClock()
			b := &Backoff{Base: time.Second, Max: time.Minute, ResetAfter: 2 * time.Minute, Clock: clock, Jitter: ceilingJitter}
			for range 3 { // 1s, 2s, 4s
				b.Next()
			}
			since := clock.Now()
			clock.Advance(tc.lasted)
			b.Connected(since)
			assert.Equal(t, tc.want, b.Next())
		})
	}
}

func TestBackoffReset(t *testing.T) {
	b := &Backoff{Base: time.Second, Max: time.Minute, Jitter: ceilingJitter}
	b.Next()
	b.Next()
	b.Reset()
	assert.Equal(t, time.Second, b.Next())
}

func TestBackoffFloor(t *testing.T) {
	b := &Backoff{Base: time.Second, Max: time.Minute, Jitter: ceilingJitter}
	const floor = 30 * time.Second
	// Ceilings 1, 2, 4, 8, 16 s are lifted to the floor; 32 and 60 s exceed it.
	want := []time.Duration{floor, floor, floor, floor, floor, 32 * time.Second, time.Minute}
	for i, w := range want {
		assert.Equal(t, w, b.Floor(floor), "wait %d", i)
	}

	t.Run("zero jitter still waits the floor", func(t *testing.T) {
		b := &Backoff{Base: time.Second, Max: time.Minute, Jitter: func(int64) int64 { return 0 }}
		for range 10 {
			assert.Equal(t, floor, b.Floor(floor))
		}
	})
}

func TestBackoffRetryAfter(t *testing.T) {
	const after = 5 * time.Second
	tests := []struct {
		name    string
		jitter  func(int64) int64
		retries int // RetryAfter calls before the one checked
		want    time.Duration
	}{
		{name: "ceiling jitter adds half", jitter: ceilingJitter, want: after + after/2},
		{name: "zero jitter waits exactly retry-after", jitter: func(int64) int64 { return 0 }, want: after},
		{name: "a longer backoff wins", jitter: ceilingJitter, retries: 4, want: 16 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := &Backoff{Base: time.Second, Max: time.Minute, Jitter: tc.jitter}
			for range tc.retries {
				b.RetryAfter(after)
			}
			assert.Equal(t, tc.want, b.RetryAfter(after))
		})
	}
	t.Run("default jitter stays within a half", func(t *testing.T) {
		b := &Backoff{Base: time.Millisecond, Max: time.Millisecond}
		seen := map[time.Duration]bool{}
		for range 200 {
			w := b.RetryAfter(after)
			assert.GreaterOrEqual(t, w, after)
			assert.LessOrEqual(t, w, after+after/2)
			seen[w] = true
		}
		assert.Greater(t, len(seen), 1, "the waits are spread, not all the same")
	})
}

func TestBackoffSleep(t *testing.T) {
	t.Run("waits on the clock", func(t *testing.T) {
		clock := testutil.NewFakeClock()
		b := &Backoff{Clock: clock}
		done := make(chan error, 1)
		go func() { done <- b.Sleep(context.Background(), 5*time.Second) }()
		w := clock.Next(t, waitBound)
		assert.Equal(t, 5*time.Second, w.D)
		w.Fire <- clock.Now()
		select {
		case err := <-done:
			assert.NoError(t, err)
		case <-time.After(waitBound):
			t.Fatal("Sleep did not return when its timer fired")
		}
	})
	t.Run("ends with the context", func(t *testing.T) {
		clock := testutil.NewFakeClock()
		b := &Backoff{Clock: clock}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- b.Sleep(ctx, time.Hour) }()
		clock.Next(t, waitBound) // asked for, never fired
		cancel()
		select {
		case err := <-done:
			assert.ErrorIs(t, err, context.Canceled)
		case <-time.After(waitBound):
			t.Fatal("Sleep did not return when its context ended")
		}
	})
	t.Run("real clock by default", func(t *testing.T) {
		b := &Backoff{}
		require.NoError(t, b.Sleep(context.Background(), 0))
	})
}

func TestDefaultBackoff(t *testing.T) {
	b := DefaultBackoff()
	assert.Equal(t, time.Second, b.Base)
	assert.Equal(t, time.Minute, b.Max)
	assert.Greater(t, b.ResetAfter, b.Max, "a connection must outlast the longest wait to count as stable")
}
