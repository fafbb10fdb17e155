package agent

import (
	"context"
	"sync"
	"time"

	"backhaul.io/backhaul/tunnel"
)

// DefaultRTTInterval is how often the agent measures its tunnels' round
// trip when Config.RTTInterval is zero: as often as the hub probes.
const DefaultRTTInterval = 15 * time.Second

// reconnects tells a session that replaces another (lost, or one the hub
// asked to move) from the agent's first sessions, as the hub's
// status.tunnel.reconnects does from its side. The supervisor's callbacks
// feed it from one goroutine; the lock keeps it honest anyway.
type reconnects struct {
	mu sync.Mutex
	// open is how many sessions are up, peak the most ever up at once.
	open, peak int
	// drains are drains whose replacement has not connected yet.
	drains int
}

// connected says whether the session that just connected replaces one:
// fewer sessions were up than once were, or one is draining.
func (r *reconnects) connected() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	replaces := r.open < r.peak || r.drains > 0
	if r.drains > 0 {
		r.drains--
	}
	r.open++
	r.peak = max(r.peak, r.open)
	return replaces
}

// sessions is told how many sessions are up whenever that changes.
func (r *reconnects) sessions(n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.open = n
	r.peak = max(r.peak, n)
}

// drained is told the hub asked a session to move.
func (r *reconnects) drained() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.drains++
}

// pingEvery measures s's round trip every interval until s or ctx ends.
func (a *Agent) pingEvery(ctx context.Context, s *tunnel.Session, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.Done():
			return
		case <-t.C:
			if rtt, err := s.Ping(); err == nil {
				a.metrics.rtt.Observe(rtt.Seconds())
			}
		}
	}
}
