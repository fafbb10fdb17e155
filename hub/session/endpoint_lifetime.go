package session

import (
	"context"
	"crypto/x509"
	"errors"
	"math/rand/v2"
	"net/http"
	"time"

	"backhaul.io/backhaul/pkg/identity"
	"backhaul.io/backhaul/tunnel"
)

// Why a session reached the end of its life, the label values of
// backhaul_hub_sessions_expired_total.
const (
	ExpiredCertificate = "certificate"
	ExpiredMaxAge      = "max_age"
)

// maxAgeJitter is the share of MaxAge taken off at random, so that a fleet
// that connected at once (a hub restart) does not reconnect at once.
const maxAgeJitter = 0.2

// lifetime is when a session must end and why: the first of its
// credential's expiry and its maximum age.
type lifetime struct {
	end    time.Time
	reason string
}

// sessionLifetime is the lifetime of a session authenticated by r at now.
// A certificate bounds it only when it is the agent's credential: an
// agent identity still valid at now (an expired one cannot have
// authenticated; a static token did). u in [0,1) draws the jitter.
func sessionLifetime(r *http.Request, now time.Time, maxAge time.Duration, u float64) lifetime {
	var l lifetime
	if notAfter, ok := agentCertExpiry(r, now); ok {
		l = lifetime{end: notAfter, reason: ExpiredCertificate}
	}
	if maxAge > 0 {
		end := now.Add(maxAge - time.Duration(u*maxAgeJitter*float64(maxAge)))
		if l.end.IsZero() || end.Before(l.end) {
			l = lifetime{end: end, reason: ExpiredMaxAge}
		}
	}
	return l
}

// agentCertExpiry is when the agent certificate r presented stops being
// valid: the earliest NotAfter of the chain it sent.
func agentCertExpiry(r *http.Request, now time.Time) (time.Time, bool) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return time.Time{}, false
	}
	leaf := r.TLS.PeerCertificates[0]
	if _, err := identity.AgentIdentityOf(leaf); err != nil || !now.Before(leaf.NotAfter) {
		return time.Time{}, false
	}
	return earliestNotAfter(r.TLS.PeerCertificates), true
}

func earliestNotAfter(chain []*x509.Certificate) time.Time {
	t := chain[0].NotAfter
	for _, c := range chain[1:] {
		if c.NotAfter.Before(t) {
			t = c.NotAfter
		}
	}
	return t
}

// retireAt ends s when its lifetime is over, as a replica drain does: no
// new streams from then on, the agent is told to dial a replacement (with
// its renewed certificate, or to authenticate its token again), and the
// session closes once its streams have finished, or after CloseGrace. It
// returns when ctx ends, the session ends, or it has closed it.
func (e *Endpoint) retireAt(ctx context.Context, s *Session, ts *tunnel.Session, l lifetime) {
	if l.end.IsZero() {
		return
	}
	timer := time.NewTimer(time.Until(l.end))
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return
	case <-ts.Done():
		return
	case <-timer.C:
	}
	s.retire()
	e.metrics.sessionExpired(l.reason)
	e.cfg.Log.Info("session reached the end of its life; the agent is asked to reconnect", "cluster", s.Cluster(),
		"session", s.info.ID, "reason", l.reason, "streams", ts.NumStreams(), "grace", e.cfg.CloseGrace)
	grace := e.cfg.CloseGrace
	dctx, cancel := context.WithTimeout(ctx, grace)
	defer cancel()
	if err := ts.Drain(dctx, grace); err != nil {
		e.cfg.Log.Debug("agent did not take the drain message", "cluster", s.Cluster(), "session", s.info.ID, "error", err)
	}
	// Idle pooled HTTP connections are streams nobody will use again.
	s.closeIdle()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for ts.NumStreams() > 0 {
		select {
		case <-dctx.Done():
			if errors.Is(dctx.Err(), context.DeadlineExceeded) {
				e.cfg.Log.Info("closing expired session with streams still open", "cluster", s.Cluster(), "session", s.info.ID, "streams", ts.NumStreams())
			}
			_ = ts.Close()
			return
		case <-ts.Done():
			return
		case <-tick.C:
			s.closeIdle()
		}
	}
	_ = ts.Close()
}

// serving says the session may carry new streams: alive and not retired.
func (s *Session) serving() bool { return !s.retired.Load() && s.alive() }

func (s *Session) retire() { s.retired.Store(true) }

// jitter draws the share of MaxAge a session gives up.
func jitter() float64 { return rand.Float64() }
