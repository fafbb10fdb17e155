package fleet

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
	apischeme "backhaul.io/backhaul/pkg/apis/scheme"
	"backhaul.io/backhaul/pkg/testutil"
)

type statusEnv struct {
	updater  *StatusUpdater
	host     client.Client
	replicas []Replica
}

func newStatusEnv(t *testing.T) *statusEnv {
	scheme, err := apischeme.New()
	require.NoError(t, err)
	e := &statusEnv{host: fake.NewClientBuilder().WithScheme(scheme).WithObjects(cluster("edge", "uid-1")).
		WithStatusSubresource(&v1alpha1.Cluster{}).Build()}
	clusters := &Clusters{log: testutil.Logger(t), uids: map[string]types.UID{}, cidrs: map[string][]string{}}
	clusters.set(cluster("edge", "uid-1"))
	e.updater = NewStatusUpdater(StatusConfig{
		Client: e.host, Clusters: clusters, Replicas: func() []Replica { return e.replicas },
		Resync: time.Second, Heartbeat: time.Minute, Log: testutil.Logger(t),
	})
	return e
}

func (e *statusEnv) status(t *testing.T) v1alpha1.ClusterStatus {
	t.Helper()
	assert.Contains(t, e.updater.changed(true), "edge")
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

func held(name string, ready bool) map[string]v1alpha1.HeldCluster {
	h := v1alpha1.HeldCluster{Name: name, Sessions: 1, AgentVersion: "v9", Ready: ready, KubernetesVersion: "v1.36.3", ReadyMessage: "ok"}
	if !ready {
		h.ReadyMessage, h.KubernetesVersion = "/readyz through the tunnel: 500", ""
	}
	return map[string]v1alpha1.HeldCluster{name: h}
}

func TestStatusFollowsTheDirectory(t *testing.T) {
	e := newStatusEnv(t)
	st := e.status(t)
	assert.Equal(t, metav1.ConditionFalse, condition(st, v1alpha1.ClusterTunnelConnected).Status)
	assert.Equal(t, "TunnelDown", condition(st, v1alpha1.ClusterReady).Reason)
	assert.Nil(t, st.LastHeartbeatTime)

	now := time.Now()
	e.replicas = []Replica{{Name: "hub-a", Renewed: now, Clusters: held("edge", true)}, {Name: "hub-b", Renewed: now, Clusters: held("edge", false)}}
	st = e.status(t)
	assert.Equal(t, metav1.ConditionTrue, condition(st, v1alpha1.ClusterTunnelConnected).Status)
	assert.Contains(t, condition(st, v1alpha1.ClusterTunnelConnected).Message, "hub-a, hub-b")
	assert.Equal(t, metav1.ConditionTrue, condition(st, v1alpha1.ClusterReady).Status, "ready when any replica reached it")
	assert.Equal(t, "v9", st.AgentVersion)
	assert.Equal(t, "v1.36.3", st.KubernetesVersion)
	assert.EqualValues(t, 2, st.Agents)
	assert.Equal(t, []string{"hub-a", "hub-b"}, st.HubReplicas)
	require.NotNil(t, st.LastHeartbeatTime)

	e.replicas = []Replica{{Name: "hub-b", Renewed: now, Clusters: held("edge", false)}}
	st = e.status(t)
	assert.Equal(t, metav1.ConditionTrue, condition(st, v1alpha1.ClusterTunnelConnected).Status)
	assert.Equal(t, "ReadyzFailed", condition(st, v1alpha1.ClusterReady).Reason)
	assert.Equal(t, []string{"hub-b"}, st.HubReplicas)

	e.replicas = nil
	st = e.status(t)
	assert.Equal(t, metav1.ConditionFalse, condition(st, v1alpha1.ClusterTunnelConnected).Status)
	assert.Equal(t, metav1.ConditionFalse, condition(st, v1alpha1.ClusterReady).Status)
	assert.Empty(t, st.HubReplicas)
	assert.Equal(t, "v1.36.3", st.KubernetesVersion, "what was last seen stays")
}

func TestStatusChangedOnlyWhatChanged(t *testing.T) {
	e := newStatusEnv(t)
	e.replicas = []Replica{{Name: "hub-a", Clusters: held("edge", true)}}
	assert.Equal(t, []string{"edge"}, e.updater.changed(false))
	assert.Empty(t, e.updater.changed(false), "nothing changed: nothing to write")
	e.replicas = []Replica{{Name: "hub-a", Clusters: held("edge", false)}}
	assert.Equal(t, []string{"edge"}, e.updater.changed(false))
}
