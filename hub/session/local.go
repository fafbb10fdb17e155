package session

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"time"

	"backhaul.io/backhaul/tunnel"
)

// OpenLocal opens, on this replica's own session of cluster, a stream for
// req: a stream another replica forwarded here. A node address goes to the
// session that advertised it, and only within cluster. Without a local
// session it answers as a peer would: a *tunnel.DialError with
// CodeUnavailable, so the forwarding replica tries another. A forwarded
// stream is never forwarded again.
func (r *Registry) OpenLocal(ctx context.Context, cluster string, req tunnel.Request) (net.Conn, error) {
	c, err := r.openLocal(ctx, cluster, req, false)
	if err != nil {
		return nil, err // not a nil *countedConn in an interface
	}
	return c, nil
}

// OpenLocalEarly is OpenLocal without waiting for the agent's reply
// (tunnel.Session.OpenEarly), for tunnel.Incoming.Relay: a forwarded
// stream's bytes go on to the agent before it answers.
func (r *Registry) OpenLocalEarly(ctx context.Context, cluster string, req tunnel.Request) (tunnel.EarlyStream, error) {
	c, err := r.openLocal(ctx, cluster, req, true)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (r *Registry) openLocal(ctx context.Context, cluster string, req tunnel.Request, early bool) (*countedConn, error) {
	s, err := r.localFor(cluster, req)
	if err != nil {
		return nil, &tunnel.DialError{Code: tunnel.CodeUnavailable, Message: err.Error()}
	}
	start := time.Now()
	open := func(s *Session) (net.Conn, error) {
		if early {
			return s.openEarly(ctx, req)
		}
		return s.open(ctx, req)
	}
	c, err := open(s)
	if err != nil && errors.Is(err, tunnel.ErrSessionClosed) && req.Kind != tunnel.KindTCP && ctx.Err() == nil {
		// The newest session failed under us at the open, before anything
		// went on (an agent closing a session it did not want): its older
		// one, if any, serves, as Dialer.Open does. (Not for node
		// addresses: another session may be another node's agent.)
		if older := r.newestExcept(cluster, s); older != nil {
			s = older
			c, err = open(s)
		}
	}
	if err != nil {
		return nil, err
	}
	return r.metrics.counted(c, s, req.Kind, start), nil
}

func (r *Registry) localFor(cluster string, req tunnel.Request) (*Session, error) {
	if req.Kind == tunnel.KindTCP {
		host, _, err := net.SplitHostPort(req.Address)
		if ip, perr := netip.ParseAddr(host); err == nil && perr == nil {
			return r.Route(cluster, ip)
		}
	}
	return r.Get(cluster)
}
