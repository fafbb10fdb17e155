package frontend

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"backhaul.io/backhaul/hub/auth"
	"backhaul.io/backhaul/hub/internal/hubtest"
	"backhaul.io/backhaul/hub/session"
	"backhaul.io/backhaul/pkg/testutil"
	"backhaul.io/backhaul/tunnel"
)

func TestMain(m *testing.M) {
	// The audit log's lumberjack starts one goroutine per file on its
	// first write and never ends it (natefinch/lumberjack#56).
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("gopkg.in/natefinch/lumberjack%2ev2.(*Logger).millRun"))
}

// clusterSet is a fixed auth.Clusters.
type clusterSet map[string]bool

func (c clusterSet) Known(name string) bool { return c[name] }

type fakeAuthz struct {
	allowed bool
	reason  string
	err     error
}

func (f fakeAuthz) Authorize(context.Context, *auth.User, string) (bool, string, error) {
	return f.allowed, f.reason, f.err
}

var alice = &auth.User{Name: "alice", UID: "uid-1", Groups: []string{"dev", "ops"}}

// frontEnds is the gateway and the CONNECT proxy over one registry, with
// clusters whose "agents" sit at the other end of a net.Pipe session.
type frontEnds struct {
	gateway  *Gateway
	connect  *Connect
	mux      *http.ServeMux
	sessions *session.Registry
	metrics  *prometheus.Registry
}

func newFrontEnds(t *testing.T, authz auth.Authorizer, known ...string) *frontEnds {
	clusters := clusterSet{}
	for _, k := range known {
		clusters[k] = true
	}
	log := testutil.Logger(t)
	reg := prometheus.NewRegistry()
	tm := session.NewMetrics(reg)
	m := NewMetrics(reg, tm)
	sessions := session.NewRegistry(log, tm)
	dialer := session.NewDialer(sessions, nil, tm, hubtest.WaitBound)
	admission := auth.NewAdmission(authz, clusters, dialer)
	authn := auth.NewStaticTokens(map[string]*auth.User{"alice-token": alice})
	g, err := NewGateway(GatewayConfig{Authn: authn, Admission: admission, Dialer: dialer, Metrics: m, Log: log})
	require.NoError(t, err)
	c, err := NewConnect(ConnectConfig{Authn: authn, Admission: admission, Dialer: dialer, Suffix: DefaultClusterSuffix, Metrics: m, Log: log,
		InsecureCredentials: true}) // the tests speak plaintext
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle("/clusters/{name}/{path...}", g)
	mux.Handle("/clusters/{name}", g)
	return &frontEnds{gateway: g, connect: c, mux: mux, sessions: sessions, metrics: reg}
}

// agent registers a session for cluster whose agent serves streams with h.
func (f *frontEnds) agent(t *testing.T, cluster string, h tunnel.Handler, a session.Agent) {
	hubSide, agentSide := hubtest.PipeSessions(t)
	hubtest.ServeAgent(t, agentSide, h)
	_, remove, err := f.sessions.Add(cluster, hubSide, a)
	require.NoError(t, err)
	t.Cleanup(remove)
}

// rejectingAgents connects one cluster per dial code, named after it, whose
// agent refuses every stream with that code.
func (f *frontEnds) rejectingAgents(t *testing.T) {
	for _, code := range []tunnel.Code{tunnel.CodeRefused, tunnel.CodeTimeout, tunnel.CodeNotAllowed, tunnel.CodeUnavailable, tunnel.CodeBadRequest, tunnel.CodeInternal} {
		f.agent(t, strings.ReplaceAll(code.String(), "_", "-"), hubtest.Rejecting(code), session.Agent{})
	}
}

var rejectingClusters = []string{"refused", "timeout", "not-allowed", "unavailable", "bad-request", "internal"}

// refusingFrontEnds knows alpha and beta, and the rejecting clusters
// connected; authz nil allows every caller.
func refusingFrontEnds(t *testing.T, authz auth.Authorizer) *frontEnds {
	if authz == nil {
		authz = auth.AllowAuthenticated{}
	}
	f := newFrontEnds(t, authz, append([]string{"alpha", "beta"}, rejectingClusters...)...)
	f.rejectingAgents(t)
	return f
}

func (f *frontEnds) errors(t *testing.T, reason string) float64 {
	return hubtest.Counter(t, f.metrics, "backhaul_hub_errors_total", map[string]string{"reason": reason})
}
