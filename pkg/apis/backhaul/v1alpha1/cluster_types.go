package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Condition types of a Cluster.
const (
	// ClusterTunnelConnected is True while at least one agent of the cluster
	// holds a tunnel session to the hub.
	ClusterTunnelConnected = "TunnelConnected"
	// ClusterReady is True when the member's /readyz answered ok through the
	// tunnel at the last heartbeat.
	ClusterReady = "Ready"
)

// Cluster is a member cluster registered with the hub. Its labels are what
// Propagation placements select on. Deleting it revokes every credential
// issued to its agents: certificates name the Cluster's UID.
//
// +genclient
// +genclient:nonNamespaced
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=bhc
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Connected",type=string,JSONPath=`.status.conditions[?(@.type=="TunnelConnected")].status`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Agent",type=string,JSONPath=`.status.agentVersion`
// +kubebuilder:printcolumn:name="Kubernetes",type=string,JSONPath=`.status.kubernetesVersion`
// +kubebuilder:printcolumn:name="RTT",type=string,JSONPath=`.status.tunnel.rtt`,priority=1
// +kubebuilder:printcolumn:name="Reconnects",type=integer,JSONPath=`.status.tunnel.reconnects`,priority=1
// +kubebuilder:printcolumn:name="Streams",type=integer,JSONPath=`.status.tunnel.streams`,priority=1
// +kubebuilder:printcolumn:name="Heartbeat",type=date,JSONPath=`.status.lastHeartbeatTime`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Cluster struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ClusterSpec   `json:"spec,omitempty"`
	Status ClusterStatus `json:"status,omitempty"`
}

// ClusterSpec is what the operator declares about a member.
type ClusterSpec struct {
	// NodeCIDRs bounds the node addresses this cluster's node-mode agents
	// may advertise for CONNECT routing. Empty means any routable address.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	NodeCIDRs []string `json:"nodeCIDRs,omitempty"`
}

// ClusterStatus is what the hub observes through the tunnel.
type ClusterStatus struct {
	// Conditions: TunnelConnected and Ready.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// AgentVersion is the version the newest connected agent reported.
	// +optional
	AgentVersion string `json:"agentVersion,omitempty"`
	// KubernetesVersion is the member API server's gitVersion.
	// +optional
	KubernetesVersion string `json:"kubernetesVersion,omitempty"`
	// LastHeartbeatTime is when the hub last reached the member through the
	// tunnel.
	// +optional
	LastHeartbeatTime *metav1.Time `json:"lastHeartbeatTime,omitempty"`
	// Agents is the number of tunnel sessions open to the reporting hub
	// replica.
	// +optional
	Agents int32 `json:"agents,omitempty"`
	// HubReplicas lists the hub replicas holding a session of this cluster.
	// +optional
	HubReplicas []string `json:"hubReplicas,omitempty"`
	// Tunnel is the tunnel's health as the hub replicas measured it in the
	// background (never on a request path), written in batches.
	// +optional
	Tunnel *TunnelStatus `json:"tunnel,omitempty"`
}

// TunnelStatus is a cluster's tunnel health: round trip, stability, load,
// and the facts an operator needs to tell why it is not connected.
type TunnelStatus struct {
	// RTT is the moving average (EWMA) of the tunnel's round trip.
	// +optional
	RTT *metav1.Duration `json:"rtt,omitempty"`
	// RTTP99 is the 99th percentile of the round trips measured over the
	// last RTTWindow.
	// +optional
	RTTP99 *metav1.Duration `json:"rttP99,omitempty"`
	// RTTWindow is the window RTTP99 and Reconnects are counted over.
	// +optional
	RTTWindow *metav1.Duration `json:"rttWindow,omitempty"`
	// Reconnects is how many sessions the cluster's agents opened in the
	// last RTTWindow beyond those still open: each is a lost session
	// replaced.
	// +optional
	Reconnects int32 `json:"reconnects,omitempty"`
	// Flapping is true when Reconnects passed the hub's flapping threshold.
	// +optional
	Flapping bool `json:"flapping,omitempty"`
	// ConnectedSince is when the oldest open session started.
	// +optional
	ConnectedSince *metav1.Time `json:"connectedSince,omitempty"`
	// Streams is how many streams are open through the cluster's sessions.
	// +optional
	Streams int32 `json:"streams,omitempty"`
	// BytesTx and BytesRx are the payload bytes carried through the
	// cluster's open sessions (tx: hub to agent).
	// +optional
	BytesTx int64 `json:"bytesTx,omitempty"`
	// +optional
	BytesRx int64 `json:"bytesRx,omitempty"`
	// LastDisconnectTime and LastDisconnectReason say when and why the
	// last session of the cluster ended.
	// +optional
	LastDisconnectTime *metav1.Time `json:"lastDisconnectTime,omitempty"`
	// +optional
	LastDisconnectReason string `json:"lastDisconnectReason,omitempty"`
	// LastRefusalTime and LastRefusalReason say when and why the hub last
	// refused an agent of this cluster (expired or revoked credential,
	// version, quota...).
	// +optional
	LastRefusalTime *metav1.Time `json:"lastRefusalTime,omitempty"`
	// +optional
	LastRefusalReason string `json:"lastRefusalReason,omitempty"`
	// CertificateNotAfter is when the newest session's agent certificate
	// expires (unset for token-authenticated agents).
	// +optional
	CertificateNotAfter *metav1.Time `json:"certificateNotAfter,omitempty"`
	// ClockSkew is the agent's clock minus the hub's, as the agent's
	// handshake reported it (positive: the agent is ahead).
	// +optional
	ClockSkew *metav1.Duration `json:"clockSkew,omitempty"`
}

// ClusterList is a list of Clusters.
//
// +kubebuilder:object:root=true
type ClusterList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Cluster `json:"items"`
}
