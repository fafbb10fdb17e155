package hub

import (
	"context"
	"sync"
	"time"
)

// drain is how a replica leaves without anyone noticing: it stops being
// ready and taking agents, tells its agents to move to another replica
// (which they do before letting go of this one), keeps serving callers —
// forwarding to wherever the agents went — until they have moved and at
// least ShutdownDelay has passed, or ShutdownGrace is over, and then ends
// the watches it carries cleanly, between two events, so clients re-watch
// through another replica without seeing an error.
func (s *Server) drain(ctx context.Context) {
	start := time.Now()
	grace := s.cfg.ShutdownGrace
	s.draining.Store(true)
	s.gateway.Leaving()
	s.endpoint.Drain()
	if s.directory != nil {
		s.directory.Drain(ctx)
	}
	s.cfg.Log.Info("draining: telling agents to move to another replica", "sessions", s.sessions.Len(), "grace", grace)
	s.sessions.DrainAll(ctx, grace)
	for time.Since(start) < grace {
		if s.sessions.Len() == 0 && time.Since(start) >= s.cfg.ShutdownDelay {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	s.cfg.Log.Info("drained: ending watches and closing", "sessions_left", s.sessions.Len(), "after", time.Since(start).Round(time.Millisecond))
	s.gateway.Drain()
}

// stop closes the listeners, lets requests in flight finish for a few
// seconds, and ends every tunnel (hijacked connections are not
// Shutdown's to track).
func (s *Server) stop(ls []served) {
	s.ready.Store(false)
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, l := range ls {
		wg.Go(func() { _ = l.srv.Shutdown(sctx) })
	}
	wg.Wait()
	s.sessions.CloseAll()
	if s.peers != nil {
		s.peers.CloseAll()
	}
}
