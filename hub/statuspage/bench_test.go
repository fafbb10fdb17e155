package statuspage_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"backhaul.io/backhaul/hub/auth"
	"backhaul.io/backhaul/hub/statuspage"
	"backhaul.io/backhaul/hub/statuspage/statuspagetest"
)

// BenchmarkFleetAnswer10k is what one poll of /status/api/clusters costs
// the hub with 10,000 clusters, for a caller who may reach every cluster
// and for one limited to half of them: with the grant and the compressed
// answer cached (the steady state of a page left open), answered 304
// (nothing changed), and with a cold grant (a new caller: one review per
// cluster, against an authorizer that answers at once).
func BenchmarkFleetAnswer10k(b *testing.B) {
	const n = 10000
	fleet := statuspagetest.NewFleet(n)
	authz := statuspagetest.NewAuthz()
	authz.GrantAll("admin")
	for i := 0; i < n; i += 2 {
		authz.Grant("half", statuspagetest.Name(i))
	}
	users := map[string]*auth.User{"admin-token": {Name: "admin"}, "half-token": {Name: "half"}}
	for i := range 1000 {
		users[fmt.Sprintf("new-%d", i)] = &auth.User{Name: "half", UID: fmt.Sprint(i)}
	}
	cfg := statuspagetest.Config(b, fleet, authz, users)
	cfg.Refresh, cfg.AccessTTL = time.Hour, time.Hour
	mux := statuspagetest.Serve(b, cfg)
	get := func(b *testing.B, token string, hdr ...string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, statuspage.PathClusters, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, req)
		if w.Code != http.StatusOK && w.Code != http.StatusNotModified {
			b.Fatalf("%d: %s", w.Code, w.Body)
		}
		return w
	}
	for _, caller := range []string{"admin-token", "half-token"} {
		b.Run("warm/"+caller, func(b *testing.B) {
			w := get(b, caller, "Accept-Encoding", "gzip")
			b.ReportMetric(float64(w.Body.Len()), "gzip-bytes")
			b.ReportAllocs()
			for b.Loop() {
				get(b, caller, "Accept-Encoding", "gzip")
			}
		})
		b.Run("uncompressed/"+caller, func(b *testing.B) {
			w := get(b, caller)
			b.ReportMetric(float64(w.Body.Len()), "bytes")
			b.ReportAllocs()
			for b.Loop() {
				get(b, caller)
			}
		})
		b.Run("not-modified/"+caller, func(b *testing.B) {
			etag := get(b, caller, "Accept-Encoding", "gzip").Header().Get("ETag")
			b.ReportAllocs()
			for b.Loop() {
				get(b, caller, "Accept-Encoding", "gzip", "If-None-Match", etag)
			}
		})
	}
	b.Run("cold-grant/limited-caller", func(b *testing.B) {
		i := 0
		before := authz.TotalCalls()
		b.ReportAllocs()
		for b.Loop() {
			get(b, fmt.Sprintf("new-%d", i%1000), "Accept-Encoding", "gzip")
			i++
		}
		b.ReportMetric(float64(authz.TotalCalls()-before)/float64(i), "reviews/op")
	})
}
