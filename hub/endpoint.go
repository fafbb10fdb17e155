package hub

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"

	"github.com/hashicorp/go-hclog"

	"backhaul.io/backhaul/pkg/kubestatus"
	"backhaul.io/backhaul/tunnel"
)

// Endpoint serves /v1/tunnel: it authenticates an agent, upgrades, and keeps
// the session registered for as long as it lives.
type Endpoint struct {
	Auth     AgentAuthenticator
	Registry *Registry
	Config   *tunnel.Config
	Log      hclog.Logger
	Metrics  *Metrics
	// NodeCIDRs, when set, bounds the node addresses an agent of cluster
	// may advertise (nil result: any routable address).
	NodeCIDRs func(cluster string) []string
	// ctx ends every session when the hub shuts down.
	ctx context.Context
}

func (e *Endpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		kubestatus.Write(w, http.StatusMethodNotAllowed, "the tunnel endpoint takes GET with a websocket upgrade")
		return
	}
	cluster, err := e.Auth.AuthenticateAgent(r)
	if err != nil {
		e.Metrics.connect("unauthenticated")
		e.Metrics.failure(reasonAgentAuth)
		e.Log.Warn("refused agent", "remote", r.RemoteAddr, "cluster", r.Header.Get(tunnel.HeaderCluster), "error", err)
		code := agentAuthStatus(err)
		if code == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Bearer realm="backhaul"`)
		}
		http.Error(w, err.Error(), code)
		return
	}
	node := r.Header.Get(tunnel.HeaderNode)
	addrs, err := parseNodeAddresses(r.Header.Get(tunnel.HeaderNodeAddresses))
	if err == nil && e.NodeCIDRs != nil {
		err = withinCIDRs(addrs, e.NodeCIDRs(cluster))
	}
	if err != nil {
		e.Metrics.connect("bad_request")
		e.Log.Warn("refused agent", "cluster", cluster, "remote", r.RemoteAddr, "error", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	sess, err := tunnel.Accept(w, r, e.Config)
	if err != nil {
		if errors.Is(err, tunnel.ErrVersion) {
			e.Metrics.failure(reasonVersion)
		}
		e.Metrics.connect("upgrade_failed")
		e.Log.Warn("agent upgrade failed", "cluster", cluster, "remote", r.RemoteAddr, "error", err)
		return
	}
	e.Metrics.connect("ok")
	remove := e.Registry.Add(cluster, sess, r.Header.Get(tunnel.HeaderAgentVersion), node, addrs)
	defer remove()
	ctx := e.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	// Agents open no streams towards the hub today; refuse any politely so
	// the session's accept queue never fills.
	err = sess.Serve(ctx, func(_ context.Context, in *tunnel.Incoming) {
		_ = in.Reject(tunnel.CodeNotAllowed, "the hub accepts no streams from agents")
	})
	e.Log.Debug("session ended", "cluster", cluster, "reason", err)
}

// maxNodeAddresses bounds what one agent may claim.
const maxNodeAddresses = 32

// parseNodeAddresses reads an agent's advertised node IPs. Addresses that
// can never be a node's (loopback, link-local, unspecified, multicast) are
// refused, so an agent cannot make the hub route to them.
func parseNodeAddresses(h string) ([]netip.Addr, error) {
	if strings.TrimSpace(h) == "" {
		return nil, nil
	}
	parts := strings.Split(h, ",")
	if len(parts) > maxNodeAddresses {
		return nil, fmt.Errorf("%d node addresses advertised, at most %d", len(parts), maxNodeAddresses)
	}
	out := make([]netip.Addr, 0, len(parts))
	for _, p := range parts {
		ip, err := netip.ParseAddr(strings.TrimSpace(p))
		if err != nil {
			return nil, fmt.Errorf("node address %q: %w", p, err)
		}
		if reason := unroutable(ip); reason != "" {
			return nil, fmt.Errorf("node address %s is %s", ip, reason)
		}
		out = append(out, ip.Unmap())
	}
	return out, nil
}

// unroutable says why the hub never routes to ip, or "".
func unroutable(ip netip.Addr) string {
	ip = ip.Unmap()
	switch {
	case ip.IsLoopback():
		return "a loopback address"
	case ip.IsLinkLocalUnicast(), ip == netip.MustParseAddr("fd00:ec2::254"):
		return "a link-local or metadata address"
	case ip.IsUnspecified(), ip.IsMulticast(), ip.IsLinkLocalMulticast():
		return "not a unicast address"
	}
	return ""
}

// withinCIDRs checks every advertised address lies in one of cidrs (none:
// no bound), so an agent of one site cannot claim another site's nodes.
func withinCIDRs(addrs []netip.Addr, cidrs []string) error {
	if len(cidrs) == 0 {
		return nil
	}
	prefixes := make([]netip.Prefix, 0, len(cidrs))
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return fmt.Errorf("cluster spec.nodeCIDRs entry %q: %w", c, err)
		}
		prefixes = append(prefixes, p.Masked())
	}
	for _, a := range addrs {
		if !slices.ContainsFunc(prefixes, func(p netip.Prefix) bool { return p.Contains(a) }) {
			return fmt.Errorf("node address %s is outside the cluster's nodeCIDRs %v", a, cidrs)
		}
	}
	return nil
}
