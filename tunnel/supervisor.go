package tunnel

import (
	"context"
	"errors"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Supervisor keeps one tunnel to the hub up: dial, serve until the session
// ends, back off, dial again. It is the agent's outer loop.
type Supervisor struct {
	Dialer  *Dialer
	Backoff *Backoff
	// PermanentFloor is the least wait after a refusal that will not fix
	// itself (401, 403, 426).
	PermanentFloor time.Duration
	Handler        Handler
	Log            hclog.Logger
	// OnConnect and OnDisconnect, when set, observe the session's life (the
	// agent's /healthz and metrics).
	OnConnect    func(*Session)
	OnDisconnect func(err error)
}

// Run returns only when ctx ends.
func (s *Supervisor) Run(ctx context.Context) error {
	b := s.Backoff
	if b == nil {
		b = DefaultBackoff()
	}
	log := s.Log
	if log == nil {
		log = hclog.NewNullLogger()
	}
	floor := s.PermanentFloor
	if floor <= 0 {
		floor = 30 * time.Second
	}
	for {
		sess, err := s.Dialer.Dial(ctx)
		if ctx.Err() != nil {
			if sess != nil {
				_ = sess.Close()
			}
			return ctx.Err()
		}
		var wait time.Duration
		if err != nil {
			if IsPermanent(err) {
				wait = b.Floor(floor)
				log.Error("hub refused the tunnel; check the agent's credentials and version", "error", err, "retry_in", wait.Round(time.Millisecond))
			} else {
				wait = b.Next()
				log.Warn("cannot reach hub", "error", err, "retry_in", wait.Round(time.Millisecond))
			}
			if s.OnDisconnect != nil {
				s.OnDisconnect(err)
			}
		} else {
			since := b.clock().Now()
			log.Info("tunnel connected", "hub", s.Dialer.URL)
			if s.OnConnect != nil {
				s.OnConnect(sess)
			}
			err = sess.Serve(ctx, s.Handler)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if s.OnDisconnect != nil {
				s.OnDisconnect(err)
			}
			b.Connected(since)
			wait = b.Next()
			if errors.Is(err, ErrSessionClosed) {
				err = nil
			}
			log.Warn("tunnel lost", "error", err, "retry_in", wait.Round(time.Millisecond))
		}
		if err := b.Sleep(ctx, wait); err != nil {
			return err
		}
	}
}
