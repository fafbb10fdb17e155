package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// HubReplica is one hub replica's entry in the session directory: which
// clusters it holds an agent session for, so the other replicas can
// forward to it. Each replica writes only its own (named after it, in the
// hub's namespace), in batches; replicas find each other's addresses in the
// EndpointSlices of the hub's headless peer Service, and an entry whose
// renewTime is older than its leaseDurationSeconds belongs to a replica
// that is gone.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Namespaced,shortName=bhr
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Clusters",type=integer,JSONPath=`.status.clusterCount`
// +kubebuilder:printcolumn:name="Draining",type=boolean,JSONPath=`.status.draining`
// +kubebuilder:printcolumn:name="Renewed",type=date,JSONPath=`.status.renewTime`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type HubReplica struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Status HubReplicaStatus `json:"status,omitempty"`
}

// HubReplicaStatus is what a replica publishes about itself.
type HubReplicaStatus struct {
	// RenewTime is when the replica last wrote this status; it writes at
	// least every leaseDurationSeconds/3 while it runs.
	// +optional
	RenewTime *metav1.MicroTime `json:"renewTime,omitempty"`
	// LeaseDurationSeconds is how long after RenewTime the entry is still
	// believed.
	// +optional
	LeaseDurationSeconds int32 `json:"leaseDurationSeconds,omitempty"`
	// Draining is set while the replica shuts down: it still serves, but
	// its agents are moving away and new streams prefer other replicas.
	// +optional
	Draining bool `json:"draining,omitempty"`
	// Version is the replica's build version (what agents are compared
	// with when a cluster is diagnosed).
	// +optional
	Version string `json:"version,omitempty"`
	// ClusterCount is len(Clusters), for kubectl get.
	// +optional
	ClusterCount int32 `json:"clusterCount,omitempty"`
	// Clusters this replica holds at least one agent session for, sorted
	// by name, with what the replica measured of each in the background.
	// +optional
	// +listType=map
	// +listMapKey=name
	Clusters []HeldCluster `json:"clusters,omitempty"`
	// Tunnels is what the replica measured in the background of each
	// cluster's tunnel: the clusters it holds, and those it lost the last
	// session of or refused an agent of within its tunnel health window.
	// The replica that writes Cluster status merges every replica's into
	// status.tunnel. Keys are short: a replica publishes one per cluster.
	// +optional
	// +listType=map
	// +listMapKey=name
	Tunnels []ReplicaTunnel `json:"tunnels,omitempty"`
}

// ReplicaTunnel is one replica's measurements of one cluster's tunnel.
// Times are Unix seconds, zero when unknown.
type ReplicaTunnel struct {
	// Name of the cluster.
	Name string `json:"name"`
	// RTTMicros is the moving average of the round trip of the newest
	// session; RTTP99Micros the 99th percentile over the window.
	// +optional
	RTTMicros int64 `json:"rtt,omitempty"`
	// +optional
	RTTP99Micros int64 `json:"p99,omitempty"`
	// Opens and Losses are when, within the window, the cluster's agents
	// opened sessions here and when sessions here were lost (the agent
	// went away or fell silent, not a planned replacement), in Unix
	// milliseconds, oldest first, the latest 32 of each: the status
	// writer pairs each loss with the next open, at any replica, into a
	// reconnect. A duplicate session its agent closed at once is neither.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	Opens []int64 `json:"opens,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxItems=32
	Losses []int64 `json:"losses,omitempty"`
	// Streams open through the cluster's sessions here.
	// +optional
	Streams int32 `json:"streams,omitempty"`
	// BytesTx and BytesRx are the payload bytes the open sessions carried
	// (tx: hub to agent).
	// +optional
	BytesTx int64 `json:"tx,omitempty"`
	// +optional
	BytesRx int64 `json:"rx,omitempty"`
	// Since is when the oldest open session started; Newest when the
	// newest did (zero: the same as Since).
	// +optional
	Since int64 `json:"since,omitempty"`
	// +optional
	Newest int64 `json:"newest,omitempty"`
	// CertNotAfter is when the newest session's agent certificate expires.
	// +optional
	CertNotAfter int64 `json:"cert,omitempty"`
	// SkewMillis is the newest session's agent clock minus this replica's.
	// +optional
	SkewMillis *int64 `json:"skew,omitempty"`
	// Disconnect and DisconnectReason: when and why a session of the
	// cluster last ended here.
	// +optional
	Disconnect int64 `json:"disc,omitempty"`
	// +optional
	DisconnectReason string `json:"discReason,omitempty"`
	// Refusal and RefusalReason: when and why this replica last refused an
	// agent whose credential names the cluster.
	// +optional
	Refusal int64 `json:"ref,omitempty"`
	// +optional
	RefusalReason string `json:"refReason,omitempty"`
}

// HeldCluster is one cluster a replica holds sessions for.
type HeldCluster struct {
	// Name of the cluster.
	Name string `json:"name"`
	// Sessions is how many agent sessions of the cluster the replica holds.
	Sessions int32 `json:"sessions"`
	// AgentVersion is the newest session's agent version.
	// +optional
	AgentVersion string `json:"agentVersion,omitempty"`
	// Ready is whether the member's /readyz answered ok through this
	// replica's session at the last background probe.
	// +optional
	Ready bool `json:"ready,omitempty"`
	// ReadyMessage says why not, or what /readyz said.
	// +optional
	ReadyMessage string `json:"readyMessage,omitempty"`
	// KubernetesVersion is the member API server's gitVersion.
	// +optional
	KubernetesVersion string `json:"kubernetesVersion,omitempty"`
	// RTTMicros is the session's last measured round trip.
	// +optional
	RTTMicros int64 `json:"rttMicros,omitempty"`
	// NodeAddresses are the node IPs its node-mode agents advertised,
	// for CONNECT IP:PORT through any replica.
	// +optional
	// +kubebuilder:validation:MaxItems=256
	NodeAddresses []string `json:"nodeAddresses,omitempty"`
}

// HubReplicaList is a list of HubReplicas.
//
// +kubebuilder:object:root=true
type HubReplicaList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []HubReplica `json:"items"`
}
