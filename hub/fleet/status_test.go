package fleet

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"backhaul.io/backhaul/hub/internal/hubtest"
	"backhaul.io/backhaul/hub/session"
	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
	apischeme "backhaul.io/backhaul/pkg/apis/scheme"
	"backhaul.io/backhaul/pkg/testutil"
)

// member answers /readyz with readyz's code and /version with v1.36.3.
func member(readyz int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/readyz":
			w.WriteHeader(readyz)
			_, _ = io.WriteString(w, "ok")
		case "/version":
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"major":"1","minor":"36","gitVersion":"v1.36.3"}`)
		default:
			http.NotFound(w, r)
		}
	})
}

type statusEnv struct {
	updater  *StatusUpdater
	host     client.Client
	sessions *session.Registry
}

func newStatusEnv(t *testing.T) *statusEnv {
	scheme, err := apischeme.New()
	require.NoError(t, err)
	host := fake.NewClientBuilder().WithScheme(scheme).WithObjects(cluster("edge", "uid-1")).
		WithStatusSubresource(&v1alpha1.Cluster{}).Build()
	tm := session.NewMetrics(prometheus.NewRegistry())
	sessions := session.NewRegistry(testutil.Logger(t), tm)
	dialer := session.NewDialer(sessions, tm, 5*time.Second)
	u := NewStatusUpdater(StatusConfig{
		Client: host, Sessions: sessions,
		Member: func(c string) *rest.Config {
			return dialer.Config(c, rest.ImpersonationConfig{UserName: "backhaul:hub"})
		},
		Interval: time.Minute, Heartbeat: time.Minute, ProbeTimeout: 5 * time.Second,
		Replica: "hub-0", Log: testutil.Logger(t),
	})
	return &statusEnv{updater: u, host: host, sessions: sessions}
}

// connect registers an agent of edge whose member serves h.
func (e *statusEnv) connect(t *testing.T, h http.Handler) func() {
	hubSide, agentSide := hubtest.PipeSessions(t)
	hubtest.ServeAgent(t, agentSide, hubtest.HTTPAgent(t, h))
	_, remove, err := e.sessions.Add("edge", hubSide, session.Agent{Version: "v9"})
	require.NoError(t, err)
	e.updater.forget("edge") // what the registry watch does
	return remove
}

func (e *statusEnv) status(t *testing.T) v1alpha1.ClusterStatus {
	t.Helper()
	require.NoError(t, e.updater.update(t.Context(), "edge"))
	var c v1alpha1.Cluster
	require.NoError(t, e.host.Get(t.Context(), types.NamespacedName{Name: "edge"}, &c))
	return c.Status
}

func condition(st v1alpha1.ClusterStatus, typ string) metav1.Condition {
	if c := meta.FindStatusCondition(st.Conditions, typ); c != nil {
		return *c
	}
	return metav1.Condition{}
}

func TestStatusFollowsTheTunnel(t *testing.T) {
	e := newStatusEnv(t)
	st := e.status(t)
	assert.Equal(t, metav1.ConditionFalse, condition(st, v1alpha1.ClusterTunnelConnected).Status)
	assert.Equal(t, "TunnelDown", condition(st, v1alpha1.ClusterReady).Reason)
	assert.Nil(t, st.LastHeartbeatTime)

	remove := e.connect(t, member(http.StatusOK))
	st = e.status(t)
	assert.Equal(t, metav1.ConditionTrue, condition(st, v1alpha1.ClusterTunnelConnected).Status)
	assert.Equal(t, metav1.ConditionTrue, condition(st, v1alpha1.ClusterReady).Status, condition(st, v1alpha1.ClusterReady).Message)
	assert.Equal(t, "v9", st.AgentVersion)
	assert.Equal(t, "v1.36.3", st.KubernetesVersion)
	assert.EqualValues(t, 1, st.Agents)
	assert.Equal(t, []string{"hub-0"}, st.HubReplicas)
	require.NotNil(t, st.LastHeartbeatTime)

	remove()
	st = e.status(t)
	assert.Equal(t, metav1.ConditionFalse, condition(st, v1alpha1.ClusterTunnelConnected).Status)
	assert.Equal(t, metav1.ConditionFalse, condition(st, v1alpha1.ClusterReady).Status)
	assert.Empty(t, st.HubReplicas)
	assert.Equal(t, "v1.36.3", st.KubernetesVersion, "what was last seen stays")

	e.connect(t, member(http.StatusInternalServerError))
	st = e.status(t)
	assert.Equal(t, metav1.ConditionTrue, condition(st, v1alpha1.ClusterTunnelConnected).Status)
	assert.Equal(t, "ReadyzFailed", condition(st, v1alpha1.ClusterReady).Reason)
}
