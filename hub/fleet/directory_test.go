package fleet

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
)

func entry(name string, renewed time.Time, clusters ...string) v1alpha1.HubReplica {
	r := v1alpha1.HubReplica{ObjectMeta: metav1.ObjectMeta{Name: name}}
	t := metav1.NewMicroTime(renewed)
	r.Status = v1alpha1.HubReplicaStatus{RenewTime: &t, LeaseDurationSeconds: 15}
	for _, c := range clusters {
		r.Status.Clusters = append(r.Status.Clusters, v1alpha1.HeldCluster{Name: c, Sessions: 1})
	}
	return r
}

func slice(port int32, eps ...discoveryv1.Endpoint) discoveryv1.EndpointSlice {
	name := PeerPortName
	return discoveryv1.EndpointSlice{Ports: []discoveryv1.EndpointPort{{Name: &name, Port: &port}}, Endpoints: eps}
}

func endpoint(pod, ip string, ready bool) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{Addresses: []string{ip}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: pod},
		Conditions: discoveryv1.EndpointConditions{Ready: &ready}}
}

func TestLiveReplicas(t *testing.T) {
	now := time.Now()
	entries := []v1alpha1.HubReplica{
		entry("hub-c", now.Add(-time.Second), "edge"),
		entry("hub-a", now.Add(-time.Hour)), // this replica: always live
		entry("hub-b", now.Add(-time.Second), "edge", "core"),
		entry("hub-d", now.Add(-20*time.Second), "edge"), // its lease ran out
	}
	eps := []discoveryv1.EndpointSlice{
		slice(8445, endpoint("hub-b", "10.0.0.2", true), endpoint("hub-c", "10.0.0.3", false)),
		slice(9999), // a slice without the peer port names nobody
	}
	live := liveReplicas("hub-a", entries, eps, now)
	names := []string{}
	for _, r := range live {
		names = append(names, r.Name)
	}
	assert.Equal(t, []string{"hub-a", "hub-b", "hub-c"}, names, "sorted; the expired entry dropped")
	assert.Equal(t, "", live[0].Address, "no endpoint names this replica: it counts, but nobody dials it")
	assert.Equal(t, "10.0.0.2:8445", live[1].Address)
	assert.True(t, live[1].Ready)
	assert.Equal(t, []string{"core", "edge"}, sortedKeys(live[1].Clusters))
	assert.False(t, live[2].Ready, "not ready, still a member: it serves while it starts or drains")
}

func sortedKeys(m map[string]v1alpha1.HeldCluster) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Node addresses are published per held cluster and read back so: two
// sites reusing an address stay two routes, never one.
func TestLiveReplicasKeepNodeAddressesPerCluster(t *testing.T) {
	now := time.Now()
	e := entry("hub-b", now, "site-a", "site-b")
	e.Status.Clusters[0].NodeAddresses = []string{"10.0.0.5"}
	e.Status.Clusters[1].NodeAddresses = []string{"10.0.0.5", "10.0.0.6"}
	live := liveReplicas("hub-a", []v1alpha1.HubReplica{entry("hub-a", now), e}, nil, now)
	require.Len(t, live, 2)
	assert.Equal(t, []string{"10.0.0.5"}, live[1].Clusters["site-a"].NodeAddresses)
	assert.Equal(t, []string{"10.0.0.5", "10.0.0.6"}, live[1].Clusters["site-b"].NodeAddresses)

	changed := slices.Clone(live)
	changed[1].Clusters = map[string]v1alpha1.HeldCluster{"site-a": live[1].Clusters["site-a"], "site-b": {Name: "site-b", Sessions: 1, NodeAddresses: []string{"10.0.0.6"}}}
	assert.False(t, replicasEqual(live, changed), "a cluster's node addresses changing is a change peers must hear of")
}

func TestLiveReplicasCarryTunnels(t *testing.T) {
	now := time.Now()
	e := entry("hub-b", now, "edge")
	e.Status.Tunnels = []v1alpha1.ReplicaTunnel{{Name: "edge", RTTMicros: 1200}, {Name: "gone", Losses: []int64{1}}}
	live := liveReplicas("hub-a", []v1alpha1.HubReplica{e}, nil, now)
	require.Len(t, live, 1)
	assert.Equal(t, []string{"edge"}, sortedKeys(live[0].Clusters), "a cluster only reported on is not held")
	assert.EqualValues(t, 1200, live[0].Tunnels["edge"].RTTMicros)
	assert.Equal(t, []int64{1}, live[0].Tunnels["gone"].Losses)
}

// TestDirectoryEntrySize pins what one held cluster costs in a replica's
// directory entry, which etcd bounds (--max-request-bytes, 1.5 MiB by
// default; docs/ha.md gives the ceiling it makes).
func TestDirectoryEntrySize(t *testing.T) {
	now := time.Unix(1_900_000_000, 0)
	skew := int64(-12)
	st := v1alpha1.HubReplicaStatus{}
	const n = 1000
	for i := range n {
		name := fmt.Sprintf("site-%05d", i)
		st.Clusters = append(st.Clusters, v1alpha1.HeldCluster{
			Name: name, Sessions: 1, AgentVersion: "v0.15.2", Ready: true, ReadyMessage: "ok", KubernetesVersion: "v1.36.3", RTTMicros: 23_456,
		})
		st.Tunnels = append(st.Tunnels, v1alpha1.ReplicaTunnel{
			Name: name, RTTMicros: 23_456, RTTP99Micros: 45_678, Streams: 3, BytesTx: 123_456_789, BytesRx: 9_876_543_210,
			Since: now.Add(-72 * time.Hour).Unix(), CertNotAfter: now.Add(20 * 24 * time.Hour).Unix(), SkewMillis: &skew,
		})
	}
	b, err := json.Marshal(st)
	require.NoError(t, err)
	perCluster := len(b) / n
	t.Logf("a held cluster costs %d bytes of the directory entry: %d clusters per replica within 1.5 MiB", perCluster, (3<<19)/perCluster)
	assert.LessOrEqual(t, perCluster, 400, "docs/ha.md's ceiling assumes at most this")
}
