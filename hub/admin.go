package hub

import (
	"net/http"
	"net/http/pprof"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"backhaul.io/backhaul/pkg/kubestatus"
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
		admin.HandleFunc("/debug/pprof/", pprof.Index)
		admin.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		admin.HandleFunc("/debug/pprof/profile", pprof.Profile)
		admin.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		admin.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return admin
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	if !s.ready.Load() {
		http.Error(w, "not ready: listeners are not serving", http.StatusServiceUnavailable)
		return
	}
	if s.standby() {
		http.Error(w, "not ready: standing by, another hub replica leads", http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ok"))
}

func (s *Server) standby() bool { return s.leadership != nil && s.leadership.Standby() }

// refuseOnStandby answers 503 to everything but probes and metrics while
// another replica leads, so an agent or caller that reaches a standby
// directly retries rather than registering where nobody looks.
func (s *Server) refuseOnStandby(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.standby() {
			switch r.URL.Path {
			case "/healthz", "/readyz", "/metrics":
			default:
				w.Header().Set("Retry-After", "5")
				kubestatus.Write(w, http.StatusServiceUnavailable, "this hub replica is a standby; another replica leads")
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}
