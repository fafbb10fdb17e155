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

// lead is how long before its end a session that began at since asks its
// agent for a replacement: a tenth of its life, at most grace.
func (l lifetime) lead(since time.Time, grace time.Duration) time.Duration {
	return min(grace, l.end.Sub(since)/10)
}

// wake is when retireAt first has something to do: the lead before the
// end when it asks for a replacement early, else the end.
func (l lifetime) wake(since time.Time, grace time.Duration) time.Time {
	if lead := l.lead(since, grace); lead >= minDrainLead {
		return l.end.Add(-lead)
	}
	return l.end
}

// minDrainLead is the least lead worth asking for a replacement early.
// A replacement that still holds the same credential (its renewal
// failed) lives only as long as the lead, so its own lead is a tenth of
// that: below this bound the chain of early replacements stops.
const minDrainLead = time.Second

// retireAt ends s when its lifetime is over, as a replica drain does: no
// new streams from then on, the agent told to dial a replacement (with
// its renewed certificate, or to authenticate its token again), and the
// session closed once its streams have finished, or after CloseGrace. The
// agent is told a little before the end (a tenth of the session's life,
// at most CloseGrace), so that its replacement is up when this session
// stops taking streams: make before break. It returns when ctx ends, the
// session ends, or it has closed it.
func (e *Endpoint) retireAt(ctx context.Context, s *Session, ts *tunnel.Session, l lifetime) {
	if l.end.IsZero() {
		return
	}
	grace := e.cfg.CloseGrace
	drained := false
	if lead := l.lead(s.info.Since, grace); lead >= minDrainLead {
		if !waitUntil(ctx, ts, l.end.Add(-lead), nil) {
			return
		}
		e.metrics.sessionExpired(l.reason)
		s.markEnd(DisconnectExpired)
		e.cfg.Log.Info("session nears the end of its life; the agent is asked for a replacement", "cluster", s.Cluster(),
			"session", s.info.ID, "reason", l.reason, "ends", l.end)
		e.drain(ctx, s, ts, time.Until(l.end)+grace)
		drained = true
		// Once the replacement is up, new streams go to it; the pooled
		// idle HTTP connections are all that keep the agent from closing
		// this session now.
		if !waitUntil(ctx, ts, l.end, func() {
			if e.registry.newestExcept(s.Cluster(), s) != nil {
				s.closeIdle()
			}
		}) {
			return
		}
	}
	if !waitUntil(ctx, ts, l.end, nil) {
		return
	}
	s.retire()
	s.markEnd(DisconnectExpired)
	if !drained {
		e.metrics.sessionExpired(l.reason)
	}
	e.cfg.Log.Info("session reached the end of its life; it takes no new streams", "cluster", s.Cluster(),
		"session", s.info.ID, "reason", l.reason, "streams", ts.NumStreams(), "grace", grace)
	if !drained {
		e.drain(ctx, s, ts, grace)
	}
	dctx, cancel := context.WithTimeout(ctx, grace)
	defer cancel()
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

// drain tells the agent to dial a replacement for s and let s go within
// grace.
func (e *Endpoint) drain(ctx context.Context, s *Session, ts *tunnel.Session, grace time.Duration) {
	e.cfg.Log.Debug("asking the agent for a replacement session", "cluster", s.Cluster(), "session", s.info.ID, "grace", grace)
	dctx, cancel := context.WithTimeout(ctx, e.cfg.CloseGrace)
	defer cancel()
	if err := ts.Drain(dctx, grace); err != nil {
		e.cfg.Log.Debug("agent did not take the drain message", "cluster", s.Cluster(), "session", s.info.ID, "error", err)
	}
}

// waitUntil waits for t, running tick (when set) every 100 ms meanwhile;
// false if ctx or the session ended first.
func waitUntil(ctx context.Context, ts *tunnel.Session, t time.Time, tick func()) bool {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	var ticks <-chan time.Time
	if tick != nil {
		ticker := time.NewTicker(100 * time.Millisecond)
		defer ticker.Stop()
		ticks = ticker.C
	}
	for {
		select {
		case <-ctx.Done():
			return false
		case <-ts.Done():
			return false
		case <-timer.C:
			return true
		case <-ticks:
			tick()
		}
	}
}

// serving says the session may carry new streams: alive and not retired.
func (s *Session) serving() bool { return !s.retired.Load() && s.alive() }

func (s *Session) retire() { s.retired.Store(true) }

// jitter draws the share of MaxAge a session gives up.
func jitter() float64 { return rand.Float64() }
