package hub

import (
	"context"
	"errors"
	"net/http"

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
		w.Header().Set("WWW-Authenticate", `Bearer realm="backhaul"`)
		http.Error(w, err.Error(), http.StatusUnauthorized)
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
	remove := e.Registry.Add(cluster, sess, r.Header.Get(tunnel.HeaderAgentVersion))
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
