package main

import (
	"context"
	"fmt"
	"sync"
	"time"
)

const (
	// dialConcurrency is how many simulated agents connect at once.
	dialConcurrency = 32
	// settle is how long RSS is left to settle before it is read.
	settle = 3 * time.Second
)

// memRig is one system's server, fresh for the memory figures, and this
// process's way of opening idle agent sessions to it with the system's own
// client library.
type memRig interface {
	// pid is the server process's.
	pid() int
	// goroutines is the server's count.
	goroutines(ctx context.Context) (float64, error)
	// sessions is the number of agent sessions the server holds.
	sessions(ctx context.Context) (int, error)
	// open opens session i and returns once its client sees it up.
	open(ctx context.Context, i int) error
	// close ends every session opened.
	close()
}

// memSample is the server's memory at one moment.
type memSample struct{ rss, goroutines float64 }

// memPoint is the server with n idle sessions.
type memPoint struct {
	n    int
	at   memSample
	dial time.Duration // to open the sessions added for this point
}

// memResult is one system's memory figures.
type memResult struct {
	err    error
	base   memSample
	points []memPoint
}

// perSession is the RSS and goroutines the server spends per session at n
// sessions (false: not measured).
func (m *memResult) perSession(n int) (rss, goroutines float64, ok bool) {
	if m == nil || m.err != nil {
		return 0, 0, false
	}
	for _, p := range m.points {
		if p.n == n {
			k := float64(n)
			return (p.at.rss - m.base.rss) / k, (p.at.goroutines - m.base.goroutines) / k, true
		}
	}
	return 0, 0, false
}

// measureMemory samples the server with no session, then with each count
// of o.agents, opening the sessions each count adds.
func measureMemory(ctx context.Context, o *options, system string, rig memRig) *memResult {
	res := &memResult{}
	defer rig.close()
	var err error
	if res.base, err = sampleServer(ctx, rig); err != nil {
		res.err = err
		return res
	}
	opened := 0
	for _, n := range o.agents {
		progress("memory: %s: %d idle sessions", system, n)
		start := time.Now()
		if err := parallel(ctx, opened, n, rig.open); err != nil {
			res.err = fmt.Errorf("opening session %d..%d: %w", opened, n-1, err)
			return res
		}
		dial := time.Since(start)
		opened = n
		if err := waitSessions(ctx, rig, n); err != nil {
			res.err = err
			return res
		}
		at, err := sampleServer(ctx, rig)
		if err != nil {
			res.err = err
			return res
		}
		res.points = append(res.points, memPoint{n: n, at: at, dial: dial})
	}
	return res
}

// waitSessions waits until the server holds n sessions.
func waitSessions(ctx context.Context, rig memRig, n int) error {
	limit := 30*time.Second + time.Duration(n)*5*time.Millisecond
	deadline := time.Now().Add(limit)
	for {
		got, err := rig.sessions(ctx)
		if err == nil && got == n {
			return nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = fmt.Errorf("the server holds %d sessions, want %d", got, n)
			}
			return fmt.Errorf("after %s: %w", limit, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// sampleServer reads the server's RSS and goroutines once it has settled.
func sampleServer(ctx context.Context, rig memRig) (memSample, error) {
	select {
	case <-time.After(settle):
	case <-ctx.Done():
		return memSample{}, ctx.Err()
	}
	rss, err := vmRSS(rig.pid())
	if err != nil {
		return memSample{}, err
	}
	g, err := rig.goroutines(ctx)
	if err != nil {
		return memSample{}, err
	}
	return memSample{rss: rss, goroutines: g}, nil
}

// parallel runs f for from..to-1, dialConcurrency at a time, and returns
// the first error.
func parallel(ctx context.Context, from, to int, f func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := make(chan int)
	go func() {
		defer close(next)
		for i := from; i < to; i++ {
			select {
			case next <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for range dialConcurrency {
		wg.Go(func() {
			for i := range next {
				if err := f(ctx, i); err != nil {
					cancel(err)
				}
			}
		})
	}
	wg.Wait()
	return context.Cause(ctx)
}
