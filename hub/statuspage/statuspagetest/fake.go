// Package statuspagetest has fakes for the status page: a fleet of any
// size with plausible health, and an authorizer with per-user grants, for
// unit tests, benchmarks and the browser test's 10,000-cluster figure.
package statuspagetest

import (
	"context"
	"fmt"
	"hash/fnv"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"backhaul.io/backhaul/hub/auth"
	"backhaul.io/backhaul/hub/session"
	"backhaul.io/backhaul/hub/statuspage"
	"backhaul.io/backhaul/pkg/testutil"
)

// Fleet is a statuspage.Source of made-up clusters.
type Fleet struct {
	mu       sync.Mutex
	clusters []statuspage.Cluster
	now      func() time.Time
	// Reads counts Clusters calls; Histories counts History calls.
	Reads     atomic.Int64
	Histories atomic.Int64
}

var _ statuspage.Source = (*Fleet)(nil)

// Name is the name of the i-th cluster of NewFleet.
func Name(i int) string { return fmt.Sprintf("site-%05d", i) }

// NewFleet makes n clusters named Name(0..n-1): every 13th disconnected,
// every 29th connected but not ready, every 97th flapping, with round
// trips, streams and bytes that vary by cluster.
func NewFleet(n int) *Fleet {
	now := time.Now()
	f := &Fleet{now: time.Now}
	for i := range n {
		c := statuspage.Cluster{
			Name: Name(i), Connected: i%13 != 0, Ready: i%13 != 0 && i%29 != 0,
			RTTMicros: int64(2000 + (i*7919)%180000), RTTP99Micros: int64(5000 + (i*7919)%400000),
			Streams: int64(i % 40), BytesTx: int64(i) * 40960, BytesRx: int64(i) * 163840,
			Sessions: 1, AgentVersion: fmt.Sprintf("v0.%d.0", 7+i%3), KubernetesVersion: "v1.36.3",
			Replicas: []string{fmt.Sprintf("hub-%d", i%3)}, ConnectedSince: now.Add(-time.Duration(i%720) * time.Minute),
			LastHeartbeat: now,
		}
		if i%29 == 0 && c.Connected {
			c.ReadyMessage = "readyz: [-]etcd failed"
		}
		if i%97 == 0 {
			c.Flapping, c.Reconnects = true, 12+int32(i%9)
			c.LastDisconnect, c.LastDisconnectReason = now.Add(-90*time.Second), "keepalive timeout"
		}
		if !c.Connected {
			c.Streams, c.Sessions, c.Replicas, c.RTTMicros, c.ConnectedSince = 0, 0, nil, 0, time.Time{}
			c.LastDisconnect, c.LastDisconnectReason = now.Add(-time.Duration(i%300)*time.Minute), "agent closed the session"
		}
		f.clusters = append(f.clusters, c)
	}
	return f
}

// Clusters implements statuspage.Source.
func (f *Fleet) Clusters(context.Context) ([]statuspage.Cluster, error) {
	f.Reads.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]statuspage.Cluster, len(f.clusters))
	copy(out, f.clusters)
	return out, nil
}

// Update changes cluster name with fn; it reports whether it exists.
func (f *Fleet) Update(name string, fn func(*statuspage.Cluster)) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.clusters {
		if f.clusters[i].Name == name {
			fn(&f.clusters[i])
			return true
		}
	}
	return false
}

// Add registers one more cluster.
func (f *Fleet) Add(c statuspage.Cluster) {
	f.mu.Lock()
	f.clusters = append(f.clusters, c)
	f.mu.Unlock()
}

// History implements statuspage.Source: an hour of one-minute samples
// around the cluster's RTT for connected clusters, none for others.
func (f *Fleet) History(cluster string) []session.RTTSample {
	f.Histories.Add(1)
	f.mu.Lock()
	var rtt int64
	for _, c := range f.clusters {
		if c.Name == cluster {
			rtt = c.RTTMicros
		}
	}
	f.mu.Unlock()
	if rtt == 0 {
		return nil
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(cluster))
	seed := h.Sum32()
	end := f.now().Truncate(time.Minute)
	out := make([]session.RTTSample, 0, 60)
	for m := 59; m >= 0; m-- {
		seed = seed*1664525 + 1013904223
		jitter := int64(seed>>8) % (rtt/2 + 1)
		out = append(out, session.RTTSample{At: end.Add(-time.Duration(m) * time.Minute), RTT: time.Duration(rtt*3/4+jitter) * time.Microsecond})
	}
	return out
}

// Authz is an auth.Authorizer with grants per user name: nil grants
// nothing, All everything.
type Authz struct {
	mu     sync.Mutex
	grants map[string]map[string]bool
	all    map[string]bool
	err    error
	// Calls counts Authorize calls by cluster ("" asks for every one).
	calls map[string]int
	// Delay is added to every answer, as a review's round trip would.
	Delay time.Duration
}

var _ auth.Authorizer = (*Authz)(nil)

// NewAuthz grants nothing to anyone.
func NewAuthz() *Authz {
	return &Authz{grants: map[string]map[string]bool{}, all: map[string]bool{}, calls: map[string]int{}}
}

// GrantAll lets user reach every cluster.
func (a *Authz) GrantAll(user string) {
	a.mu.Lock()
	a.all[user] = true
	a.mu.Unlock()
}

// Grant lets user reach clusters.
func (a *Authz) Grant(user string, clusters ...string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.grants[user] == nil {
		a.grants[user] = map[string]bool{}
	}
	for _, c := range clusters {
		a.grants[user][c] = true
	}
}

// Fail makes every answer err (nil: answer again).
func (a *Authz) Fail(err error) {
	a.mu.Lock()
	a.err = err
	a.mu.Unlock()
}

// Calls is how many times Authorize was asked about cluster ("": all).
func (a *Authz) Calls(cluster string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.calls[cluster]
}

// TotalCalls is how many times Authorize was asked.
func (a *Authz) TotalCalls() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, c := range a.calls {
		n += c
	}
	return n
}

// Authorize implements auth.Authorizer. An empty cluster asks for every
// cluster, as a SubjectAccessReview without a name does.
func (a *Authz) Authorize(ctx context.Context, u *auth.User, cluster string) (bool, string, error) {
	if a.Delay > 0 {
		select {
		case <-time.After(a.Delay):
		case <-ctx.Done():
			return false, "", fmt.Errorf("%w: %w", auth.ErrUnavailable, ctx.Err())
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls[cluster]++
	if a.err != nil {
		return false, "", a.err
	}
	if a.all[u.Name] {
		return true, "", nil
	}
	return cluster != "" && a.grants[u.Name][cluster], "not granted", nil
}

// Config is a page's configuration over source, authenticating callers
// by bearer token (tokens) and authorizing them with authz; the rest is
// statuspage.DefaultConfig's, logging to tb.
func Config(tb testing.TB, source statuspage.Source, authz auth.Authorizer, tokens map[string]*auth.User) statuspage.Config {
	cfg := statuspage.DefaultConfig()
	cfg.Authn, cfg.Authz, cfg.Source, cfg.Replica = auth.NewStaticTokens(tokens), authz, source, "hub-0"
	cfg.Log, cfg.Metrics = testutil.Logger(tb), statuspage.NewMetrics(prometheus.NewRegistry())
	return cfg
}

// Serve runs the page of cfg until the test ends and returns its routes.
func Serve(tb testing.TB, cfg statuspage.Config) http.Handler {
	tb.Helper()
	p, err := statuspage.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	testutil.Background(tb, "status page", 10*time.Second, p.Run)
	mux := http.NewServeMux()
	p.Register(mux)
	return mux
}
