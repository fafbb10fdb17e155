// Package profiling mounts Go's runtime profiles (net/http/pprof) on an
// admin mux. Hub and agent serve them only when asked (--profiling), and
// only on their private admin listener: a profile shows request paths and
// a trace can stall the process.
package profiling

import (
	"net/http"
	"net/http/pprof"
)

// Handle mounts /debug/pprof/ on mux.
func Handle(mux *http.ServeMux) {
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
}
