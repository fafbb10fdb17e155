package statuspage_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"backhaul.io/backhaul/hub/internal/hubtest"
	"backhaul.io/backhaul/hub/session"
	"backhaul.io/backhaul/hub/statuspage"
	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
	apischeme "backhaul.io/backhaul/pkg/apis/scheme"
	"backhaul.io/backhaul/pkg/testutil"
)

type fakeProber map[string]session.Health

func (p fakeProber) Health(c string) session.Health { return p[c] }
func (p fakeProber) History(c string) []session.RTTSample {
	if h, ok := p[c]; ok {
		return []session.RTTSample{{At: h.At, RTT: h.RTT}}
	}
	return nil
}

type reach map[string]bool

func (r reach) Connected(c string) bool { return r[c] }

type nameList []string

func (n nameList) Names() []string { return n }

func newRegistry(t *testing.T, clusters ...string) *session.Registry {
	reg := session.NewRegistry(testutil.Logger(t), session.NewMetrics(prometheus.NewRegistry()))
	for _, c := range clusters {
		ts, _ := hubtest.PipeSessions(t)
		_, remove, err := reg.Add(c, ts, session.Agent{Version: "v-local"})
		require.NoError(t, err)
		t.Cleanup(remove)
	}
	return reg
}

func byName(cs []statuspage.Cluster) map[string]statuspage.Cluster {
	out := map[string]statuspage.Cluster{}
	for _, c := range cs {
		out[c.Name] = c
	}
	return out
}

// HubSource merges Cluster objects (what the singleton wrote, for the
// whole fleet) with this replica's sessions and probes (fresher, for what
// it holds).
func TestHubSourceMergesStatusAndLocalState(t *testing.T) {
	scheme, err := apischeme.New()
	require.NoError(t, err)
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	ms := func(d time.Duration) *metav1.Duration { return &metav1.Duration{Duration: d} }
	objects := []*v1alpha1.Cluster{
		{ // held here and at hub-1; status says ready, the probe says not
			ObjectMeta: metav1.ObjectMeta{Name: "held"},
			Status: v1alpha1.ClusterStatus{
				AgentVersion: "v-status", KubernetesVersion: "v1.35.0", HubReplicas: []string{"hub-1"},
				Conditions: []metav1.Condition{{Type: v1alpha1.ClusterReady, Status: metav1.ConditionTrue, Reason: "Ok", LastTransitionTime: now}},
				Tunnel: &v1alpha1.TunnelStatus{
					RTT: ms(3 * time.Millisecond), RTTP99: ms(9 * time.Millisecond), Reconnects: 7, Flapping: true,
					Streams: 5, BytesTx: 100, BytesRx: 200, LastDisconnectTime: &now, LastDisconnectReason: "keepalive timeout",
				},
			},
		},
		{ // registered, never connected; its Ready condition is stale
			ObjectMeta: metav1.ObjectMeta{Name: "gone"},
			Status: v1alpha1.ClusterStatus{
				Conditions: []metav1.Condition{{Type: v1alpha1.ClusterReady, Status: metav1.ConditionTrue, Reason: "Ok", LastTransitionTime: now}},
				Tunnel:     &v1alpha1.TunnelStatus{LastRefusalTime: &now, LastRefusalReason: "certificate expired"},
			},
		},
		{ // held only at a peer
			ObjectMeta: metav1.ObjectMeta{Name: "peer"},
			Status: v1alpha1.ClusterStatus{
				HubReplicas: []string{"hub-1"}, AgentVersion: "v-peer",
				Conditions: []metav1.Condition{{Type: v1alpha1.ClusterReady, Status: metav1.ConditionFalse, Reason: "NotReady", Message: "etcd down", LastTransitionTime: now}},
			},
		},
	}
	b := fake.NewClientBuilder().WithScheme(scheme)
	for _, o := range objects {
		b = b.WithObjects(o)
	}
	probed := time.Now()
	src := &statuspage.HubSource{
		Registered: b.Build(),
		Sessions:   newRegistry(t, "held", "unregistered"),
		Prober: fakeProber{
			"held":         {RTT: time.Millisecond, Ready: false, Message: "readyz: [-]etcd", KubernetesVersion: "v1.36.3", At: probed},
			"unregistered": {RTT: 2 * time.Millisecond, Ready: true, Message: "ok", At: probed},
		},
		Reach:   reach{"held": true, "unregistered": true, "peer": true},
		Replica: "hub-0",
	}
	got, err := src.Clusters(context.Background())
	require.NoError(t, err)
	assert.Equal(t, []string{"gone", "held", "peer", "unregistered"}, names(got))
	rows := byName(got)

	held := rows["held"]
	assert.True(t, held.Connected)
	assert.False(t, held.Ready, "the probe is fresher than the condition")
	assert.Equal(t, "readyz: [-]etcd", held.ReadyMessage)
	assert.Equal(t, "v-local", held.AgentVersion)
	assert.Equal(t, "v1.36.3", held.KubernetesVersion)
	assert.Equal(t, []string{"hub-0", "hub-1"}, held.Replicas)
	assert.EqualValues(t, 3000, held.RTTMicros, "the status' EWMA over one probe")
	assert.EqualValues(t, 9000, held.RTTP99Micros)
	assert.True(t, held.Flapping)
	assert.EqualValues(t, 7, held.Reconnects)
	assert.EqualValues(t, 5, held.Streams, "two replicas hold it: the status' sum")
	assert.EqualValues(t, 100, held.BytesTx)
	assert.Equal(t, "keepalive timeout", held.LastDisconnectReason)
	assert.Equal(t, 1, held.Sessions)
	assert.Equal(t, probed, held.LastHeartbeat)

	gone := rows["gone"]
	assert.False(t, gone.Connected)
	assert.False(t, gone.Ready, "a disconnected cluster is not ready, whatever the last condition said")
	assert.Equal(t, "certificate expired", gone.LastRefusalReason)
	assert.Zero(t, gone.Sessions)

	peer := rows["peer"]
	assert.True(t, peer.Connected, "reachable through a peer")
	assert.Equal(t, "etcd down", peer.ReadyMessage)
	assert.Equal(t, []string{"hub-1"}, peer.Replicas)
	assert.Equal(t, "v-peer", peer.AgentVersion)

	un := rows["unregistered"]
	assert.True(t, un.Connected && un.Ready)
	assert.Empty(t, un.ReadyMessage, "what /readyz says when ready is no news")
	assert.EqualValues(t, 2000, un.RTTMicros, "no status: the probe's round trip")
	assert.Equal(t, []string{"hub-0"}, un.Replicas)
	assert.False(t, un.ConnectedSince.IsZero())

	assert.Len(t, src.History("held"), 1)
}

// Without a host cluster, the registered names are the fleet.
func TestHubSourceStaticRegistry(t *testing.T) {
	src := &statuspage.HubSource{
		Names: nameList{"alpha", "beta"}, Sessions: newRegistry(t, "alpha"),
		Prober: fakeProber{}, Reach: reach{"alpha": true}, Replica: "hub-0",
	}
	got, err := src.Clusters(context.Background())
	require.NoError(t, err)
	require.Len(t, got, 2)
	assert.Equal(t, "alpha", got[0].Name)
	assert.True(t, got[0].Connected)
	assert.False(t, got[0].Ready, "not probed yet")
	assert.Equal(t, "beta", got[1].Name)
	assert.False(t, got[1].Connected)
}
