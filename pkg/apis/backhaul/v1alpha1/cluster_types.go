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
}

// ClusterList is a list of Clusters.
//
// +kubebuilder:object:root=true
type ClusterList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Cluster `json:"items"`
}
