package hub

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"backhaul.io/backhaul/pkg/profiling"
)

// adminHandler serves /healthz (the process), /readyz (listeners up and
// leading), /metrics and, with Profiling on the admin listener,
// /debug/pprof/.
func (s *Server) adminHandler() http.Handler {
	admin := http.NewServeMux()
	admin.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	admin.HandleFunc("GET /readyz", s.readyz)
	admin.Handle("GET /metrics", promhttp.HandlerFor(s.cfg.Metrics, promhttp.HandlerOpts{}))
	if s.cfg.Profiling && s.cfg.AdminListen != "" {
		// Only on the plain admin listener, which should stay private.
		profiling.Handle(admin)
	}
	return admin
}

// readyz is ready while this replica serves: listening, not draining, and
// able to reach its host cluster.
// Every replica serves; which one does singleton work does not matter
// here.
func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	switch {
	case s.draining.Load():
		http.Error(w, "not ready: draining, agents are moving to other replicas", http.StatusServiceUnavailable)
	case !s.ready.Load():
		http.Error(w, "not ready: listeners are not serving", http.StatusServiceUnavailable)
	case !s.hostReachable():
		http.Error(w, "not ready: the host cluster cannot be reached; callers cannot be authenticated", http.StatusServiceUnavailable)
	default:
		_, _ = w.Write([]byte("ok"))
	}
}
