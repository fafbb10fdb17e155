package peer

import (
	"context"
	"crypto/x509"
	"errors"
	"net/http"
	"net/url"
	"sync"
	"time"

	"backhaul.io/backhaul/pkg/kubestatus"
	"backhaul.io/backhaul/tunnel"
)

// Path is where the peer listener takes replicas' connections.
const Path = "/v1/peer"

// HeaderReplica names the dialling replica on the upgrade (its
// certificate decides; the header only makes logs readable).
const HeaderReplica = "Backhaul-Replica"

// ServeHTTP takes a connection from a peer that dialled this replica: its
// certificate must be a replica's from the hub CA.
func (m *Manager) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		kubestatus.Write(w, http.StatusUnauthorized, "peer connections need a replica certificate")
		return
	}
	name, err := verifyReplica(r.TLS.PeerCertificates, m.cfg.Identity.roots(), x509.ExtKeyUsageClientAuth)
	if err != nil || name == m.cfg.Self {
		m.cfg.Log.Warn("refused a peer connection", "remote", r.RemoteAddr, "error", err, "name", name)
		kubestatus.Write(w, http.StatusForbidden, "not a peer replica")
		return
	}
	ts, err := tunnel.Accept(w, r, m.cfg.Tunnel)
	if err != nil {
		m.cfg.Log.Warn("peer upgrade failed", "peer", name, "error", err)
		return
	}
	detach := m.attach(&conn{name: name, sess: ts})
	defer detach()
	_ = ts.Serve(r.Context(), m.forward)
}

// Run dials, and keeps dialled, every peer whose name sorts after this
// replica's (the others dial this one), until ctx ends.
func (m *Manager) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	type dialing struct {
		address string
		stop    context.CancelFunc
	}
	dialers := map[string]dialing{}
	defer func() {
		for _, d := range dialers {
			d.stop()
		}
	}()
	for {
		want := m.toDial()
		for name, d := range dialers {
			if want[name] != d.address {
				d.stop()
				delete(dialers, name)
			}
		}
		for name, addr := range want {
			if _, ok := dialers[name]; !ok {
				dctx, stop := context.WithCancel(ctx)
				dialers[name] = dialing{address: addr, stop: stop}
				wg.Go(func() { m.keep(dctx, name, addr) })
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-m.wake:
		}
	}
}

// toDial is name → address of the peers this replica dials.
func (m *Manager) toDial() map[string]string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := map[string]string{}
	for name, mb := range m.members {
		if name > m.cfg.Self && mb.Address != "" {
			out[name] = mb.Address
		}
	}
	return out
}

// keep holds a connection with peer name at addr until ctx ends.
func (m *Manager) keep(ctx context.Context, name, addr string) {
	b := m.cfg.Backoff()
	h := http.Header{}
	h.Set(HeaderReplica, m.cfg.Self)
	d := &tunnel.Dialer{
		URL: "wss://" + addr + Path, TLSConfig: m.cfg.Identity.ClientTLS(name), Header: h,
		// Peers are reached directly, never through an egress proxy.
		Proxy:            func(*http.Request) (*url.URL, error) { return nil, nil },
		HandshakeTimeout: 10 * time.Second, Config: m.cfg.Tunnel,
	}
	for ctx.Err() == nil {
		ts, err := d.Dial(ctx)
		if err != nil {
			if ctx.Err() == nil {
				m.cfg.Log.Debug("cannot reach peer", "peer", name, "address", addr, "error", err)
			}
			_ = b.Sleep(ctx, b.Next())
			continue
		}
		since := time.Now()
		detach := m.attach(&conn{name: name, sess: ts})
		err = ts.Serve(ctx, m.forward)
		detach()
		b.Connected(since)
		if ctx.Err() == nil && !errors.Is(err, tunnel.ErrSessionClosed) {
			m.cfg.Log.Warn("peer connection lost", "peer", name, "error", err)
		}
		_ = b.Sleep(ctx, b.Next())
	}
}

// forward serves a stream a peer forwarded: it opens the inner stream on
// this replica's own session of the cluster and joins the two. Anything
// but a forward is refused: peers are not agents.
func (m *Manager) forward(ctx context.Context, in *tunnel.Incoming) {
	if in.Request.Kind != tunnel.KindForward {
		_ = in.Reject(tunnel.CodeBadRequest, "a peer replica only forwards")
		return
	}
	cluster, inner, err := in.Request.Forwarded()
	if err != nil {
		_ = in.Reject(tunnel.CodeBadRequest, err.Error())
		return
	}
	// Opened early and relayed: what the forwarding replica sent early goes
	// on to the agent before it answers, and its answer comes back as
	// this stream's, so a forwarded stream waits one round trip, not two.
	out, err := m.cfg.Sessions.OpenLocalEarly(ctx, cluster, inner)
	if err != nil {
		var de *tunnel.DialError
		if errors.As(err, &de) {
			_ = in.Reject(de.Code, de.Message)
		} else {
			// Nothing reached the agent: another holder may serve it.
			_ = in.Reject(tunnel.CodeUnavailable, err.Error())
		}
		return
	}
	in.Relay(ctx, out)
}
