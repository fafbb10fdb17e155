package tunnel

import (
	"fmt"
	"time"

	"github.com/hashicorp/yamux"
)

// keepalive pings the peer every KeepAliveInterval and ends the session
// when a ping goes unanswered for KeepAliveTimeout, as yamux's own
// keepalive does; but from a timer, not a goroutine that lives as long as
// the session. A hub holds thousands of idle sessions: this is one
// goroutine (and its stack) fewer on each, on both sides. The timer's
// function runs only while a ping is in flight.
type keepalive struct {
	s     *Session
	timer *time.Timer
}

func (s *Session) startKeepalive() {
	k := &keepalive{s: s}
	k.timer = time.AfterFunc(s.cfg.KeepAliveInterval, k.ping)
	s.stopKeepalive = func() { k.timer.Stop() }
}

func (k *keepalive) ping() {
	// yamux's Ping waits ConnectionWriteTimeout (KeepAliveTimeout) for
	// the answer.
	if _, err := k.s.mux.Ping(); err != nil {
		if k.s.mux.IsClosed() {
			return
		}
		k.s.keepaliveFailed.Store(true)
		k.s.log.Error("keepalive failed; ending the session", "error", err)
		_ = k.s.Close()
		return
	}
	if !k.s.mux.IsClosed() {
		k.timer.Reset(k.s.cfg.KeepAliveInterval)
	}
}

// endErr is why a session whose accept loop ended with err ended: a
// failed keepalive reads as yamux's own would.
func (s *Session) endErr(err error) error {
	if s.keepaliveFailed.Load() {
		return fmt.Errorf("accept stream: %w", yamux.ErrKeepAliveTimeout)
	}
	return err
}
