package hub

import (
	"context"
	"crypto"
	"maps"
	"net/http"
	"slices"
	"time"

	"backhaul.io/backhaul/hub/auth"
	"backhaul.io/backhaul/hub/enrollment"
	"backhaul.io/backhaul/hub/fleet"
	"backhaul.io/backhaul/hub/peer"
	"backhaul.io/backhaul/hub/propagation"
	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
	"backhaul.io/backhaul/pkg/logging"
)

// Timings of the session directory: an entry is believed for
// directoryLease after its last write (rewritten every third of it), and
// changes are gathered for directoryBatch into one write.
const (
	directoryLease = 15 * time.Second
	directoryBatch = time.Second
	// peerCertValidity is a replica certificate's life; it renews at two
	// thirds of it.
	peerCertValidity = 7 * 24 * time.Hour
)

// newPeers sets up this replica's identity and its peer connections.
func (s *Server) newPeers() error {
	h, log := s.cfg.Host, s.cfg.Log.Named("peer")
	sign := func(pub crypto.PublicKey, validity time.Duration) ([]byte, error) {
		return h.CA.SignReplica(pub, s.cfg.Replica, validity)
	}
	var err error
	if s.identity, err = peer.NewIdentity(s.cfg.Replica, h.CA.Pool, sign, peerCertValidity, log); err != nil {
		return err
	}
	tcfg := *s.cfg.Tunnel
	tcfg.Logger = log
	s.peers, err = peer.NewManager(peer.Config{
		Self: s.cfg.Replica, Identity: s.identity, Sessions: s.sessions, Tunnel: &tcfg,
		OnChange: s.events.fire, Log: log,
	})
	return err
}

// wireHost adds what a host cluster brings: enrollment, revocation of
// removed clusters, the session directory, and the singleton work.
func (s *Server) wireHost(mux *http.ServeMux) error {
	h, log := s.cfg.Host, s.cfg.Log.Named(logging.Enroll)
	enroller, err := enrollment.New(enrollment.Config{
		Tokens: h.Tokens, CA: h.CA, Clusters: h.Clusters, Sessions: s.sessions, Limits: h.EnrollLimits,
		Validity: h.AgentCertValidity, Log: log, Metrics: enrollment.NewMetrics(s.cfg.Metrics),
	})
	if err != nil {
		return err
	}
	enroller.Register(mux)
	h.Clusters.OnGone(func(c string) {
		if n := s.sessions.Close(c); n > 0 {
			log.Info("closed sessions of a removed cluster", "cluster", c, "sessions", n)
		}
	})
	s.directory, err = fleet.NewDirectory(fleet.DirectoryConfig{
		Host: h.Host, Self: s.cfg.Replica, Holdings: s.holdings, Tunnels: s.tunnels, LeaseDuration: directoryLease,
		BatchDelay: directoryBatch, OnChange: s.directoryChanged, Log: s.cfg.Log.Named("directory"),
	})
	if err != nil {
		return err
	}
	s.sessions.Watch(func(string) { s.directory.HoldingsChanged() })
	if err := h.Manager.Add(s.directory); err != nil {
		return err
	}
	if !h.LeaderElect {
		return nil
	}
	lock, err := h.LeaseLock(s.cfg.Replica)
	if err != nil {
		return err
	}
	lease, renew, retry := fleet.DefaultSingletonTimings()
	s.singleton, err = fleet.NewSingleton(fleet.SingletonConfig{
		Lock: lock, LeaseDuration: lease, RenewDeadline: renew, RetryPeriod: retry,
		Work: s.singletonWork, Log: s.cfg.Log.Named("singleton"),
	})
	return err
}

// singletonWork runs for one leadership term: Cluster status, the token
// janitor and the Propagation controller, on a manager of the term's own.
func (s *Server) singletonWork(ctx context.Context) error {
	h := s.cfg.Host
	mgr, err := h.NewSingletonManager()
	if err != nil {
		return err
	}
	status := fleet.NewStatusUpdater(fleet.StatusConfig{
		Client: mgr.GetClient(), Clusters: h.Clusters, Replicas: s.directory.Live,
		Resync: time.Second, Heartbeat: h.Heartbeat, Tunnel: s.cfg.TunnelHealth.Status, Metrics: s.fleetMetrics,
		Log: s.cfg.Log.Named(logging.Status),
	})
	if err := mgr.Add(status); err != nil {
		return err
	}
	if err := mgr.Add(enrollment.NewJanitor(h.Tokens, 10*time.Minute, s.cfg.Log.Named(logging.Enroll))); err != nil {
		return err
	}
	if h.Propagation != nil {
		opts := *h.Propagation
		// Each term registers the controller on a new manager of the
		// same process.
		opts.SkipNameValidation = true
		opts.Metrics = s.propMetrics
		if err := propagation.Setup(mgr, members{ctx: ctx, dialer: s.dialer, events: s.events}, opts); err != nil {
			return err
		}
	}
	return mgr.Start(ctx)
}

// holdings is what this replica publishes in the directory: the clusters
// it holds sessions of, with what the prober measured.
func (s *Server) holdings() []v1alpha1.HeldCluster {
	hs := s.sessions.Holdings()
	out := make([]v1alpha1.HeldCluster, 0, len(hs))
	for _, h := range hs {
		p := s.prober.Health(h.Cluster)
		hc := v1alpha1.HeldCluster{
			Name: h.Cluster, Sessions: int32(h.Sessions), AgentVersion: h.AgentVersion,
			Ready: p.Ready, ReadyMessage: truncate(p.Message, 256), KubernetesVersion: p.KubernetesVersion,
			RTTMicros: p.RTT.Microseconds(),
		}
		for _, a := range h.Nodes {
			hc.NodeAddresses = append(hc.NodeAddresses, a.String())
		}
		out = append(out, hc)
	}
	return out
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// holdingsChanged is the prober's: a readiness change is published now.
func (s *Server) holdingsChanged(string) {
	if s.directory != nil {
		s.directory.HoldingsChanged()
	}
}

// directoryChanged hands the live replicas to the peer connections.
func (s *Server) directoryChanged(replicas []fleet.Replica) {
	if s.peers == nil {
		return
	}
	members := make([]peer.Member, 0, len(replicas))
	for _, r := range replicas {
		m := peer.Member{Name: r.Name, Address: r.Address, Draining: r.Draining, Nodes: map[string][]string{}}
		m.Clusters = slices.Sorted(maps.Keys(r.Clusters))
		for name, h := range r.Clusters {
			if len(h.NodeAddresses) > 0 {
				m.Nodes[name] = h.NodeAddresses
			}
		}
		members = append(members, m)
	}
	s.peers.Update(members)
}

// hubIdentity is the impersonation headers of the hub's own requests to
// members (probes).
func hubIdentity() http.Header {
	h := http.Header{}
	u := auth.Hub()
	h.Set("Impersonate-User", u.Name)
	for _, g := range u.Groups {
		h.Add("Impersonate-Group", g)
	}
	return h
}
