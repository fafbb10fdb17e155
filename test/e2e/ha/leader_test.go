package ha

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// leaderSample is which replicas said backhaul_hub_singleton_leading 1 in
// one round (the replicas are asked at once).
type leaderSample struct {
	at      time.Time
	leaders []string
}

// leaderSampler asks every replica every 100 ms whether it does the
// singleton work. Two at once is the one thing leader election must never
// allow. A replica that does not answer (not running) leads nothing.
type leaderSampler struct {
	e      *environment
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	samples []leaderSample
}

func (e *environment) startLeaderSampler(t *testing.T) *leaderSampler {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &leaderSampler{e: e, cancel: cancel, done: make(chan struct{})}
	go s.run(ctx)
	t.Cleanup(s.stop)
	return s
}

func (s *leaderSampler) stop() {
	s.cancel()
	<-s.done
}

func (s *leaderSampler) run(ctx context.Context) {
	defer close(s.done)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		at := time.Now()
		leading := make([]bool, len(s.e.replicas))
		var wg sync.WaitGroup
		for i, r := range s.e.replicas {
			wg.Go(func() {
				v, err := r.gauge(ctx, "backhaul_hub_singleton_leading")
				leading[i] = err == nil && v == 1
			})
		}
		wg.Wait()
		var names []string
		for i, l := range leading {
			if l {
				names = append(names, s.e.replicas[i].name)
			}
		}
		s.mu.Lock()
		s.samples = append(s.samples, leaderSample{at: at, leaders: names})
		s.mu.Unlock()
	}
}

func (s *leaderSampler) all() []leaderSample {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.samples)
}

// overlaps lists the samples where more than one replica led.
func (s *leaderSampler) overlaps() []string {
	var out []string
	for _, x := range s.all() {
		if len(x.leaders) > 1 {
			out = append(out, x.at.Format("15:04:05.000")+" "+strings.Join(x.leaders, "+"))
		}
	}
	return out
}

// current is the last sample's leaders.
func (s *leaderSampler) current() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.samples) == 0 {
		return nil
	}
	return s.samples[len(s.samples)-1].leaders
}

// first is the time of the first sample after since that satisfies ok.
func (s *leaderSampler) first(since time.Time, ok func([]string) bool) (time.Time, bool) {
	for _, x := range s.all() {
		if !x.at.Before(since) && ok(x.leaders) {
			return x.at, true
		}
	}
	return time.Time{}, false
}

// leaderless is the longest run of samples after since with no leader.
func (s *leaderSampler) leaderless(since time.Time) time.Duration {
	var longest time.Duration
	var from time.Time
	for _, x := range s.all() {
		if x.at.Before(since) {
			continue
		}
		switch {
		case len(x.leaders) == 0 && from.IsZero():
			from = x.at
		case len(x.leaders) > 0 && !from.IsZero():
			longest = max(longest, x.at.Sub(from))
			from = time.Time{}
		}
	}
	return longest
}

// waitOneLeader waits until exactly one replica leads, and returns it.
func (s *leaderSampler) waitOneLeader(ctx context.Context, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if l := s.current(); len(l) == 1 {
			return l[0], nil
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return "", fmt.Errorf("no single leader within %v (now %v)", timeout, s.current())
}

// otherLeads: a replica other than name leads (whether or not name does).
func otherLeads(name string) func([]string) bool {
	return func(l []string) bool { return slices.ContainsFunc(l, func(x string) bool { return x != name }) }
}
