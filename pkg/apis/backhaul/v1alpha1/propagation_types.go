package v1alpha1

import (
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// Propagation pushes one object, adjusted per cluster, to every member its
// placement selects, through the tunnels.
//
// +genclient
// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=prop
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Kind",type=string,JSONPath=`.spec.template.kind`
// +kubebuilder:printcolumn:name="Ready",type=integer,JSONPath=`.status.readyClusters`
// +kubebuilder:printcolumn:name="Total",type=integer,JSONPath=`.status.totalClusters`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Propagation struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   PropagationSpec   `json:"spec"`
	Status PropagationStatus `json:"status,omitempty"`
}

// PropagationSpec is what to push and where.
type PropagationSpec struct {
	// Template is the object written to each member: any kind, CRD
	// instances included. A namespaced object without a namespace lands in
	// the Propagation's namespace.
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:EmbeddedResource
	Template runtime.RawExtension `json:"template"`
	// Placement selects the member clusters.
	Placement Placement `json:"placement"`
	// Overrides adjust the template for some clusters, in order.
	// +optional
	// +kubebuilder:validation:MaxItems=100
	Overrides []Override `json:"overrides,omitempty"`
	// ReplicaDivision divides spec.replicas among the placed clusters.
	// +optional
	ReplicaDivision *ReplicaDivision `json:"replicaDivision,omitempty"`
}

// ClusterSelection names clusters and/or selects them by label. A cluster
// matches when it is named or its labels match the selector.
type ClusterSelection struct {
	// +optional
	// +kubebuilder:validation:MaxItems=1000
	Clusters []string `json:"clusters,omitempty"`
	// +optional
	ClusterSelector *metav1.LabelSelector `json:"clusterSelector,omitempty"`
}

// Placement selects member clusters.
type Placement struct {
	ClusterSelection `json:",inline"`
}

// Override applies JSON patch operations (RFC 6902) to the template for the
// clusters it selects.
type Override struct {
	ClusterSelection `json:",inline"`
	// +kubebuilder:validation:MinItems=1
	Patches []JSONPatchOperation `json:"patches"`
}

// JSONPatchOperation is one RFC 6902 operation.
type JSONPatchOperation struct {
	// +kubebuilder:validation:Enum=add;remove;replace;move;copy;test
	Op string `json:"op"`
	// +kubebuilder:validation:MinLength=1
	Path string `json:"path"`
	// +optional
	From string `json:"from,omitempty"`
	// +optional
	Value *apiextensionsv1.JSON `json:"value,omitempty"`
}

// ReplicaDivision divides Replicas among the placed clusters that are Ready,
// in proportion to their weights (1 when no weight names them), within each
// cluster's min and max.
type ReplicaDivision struct {
	// +kubebuilder:validation:Minimum=0
	Replicas int32 `json:"replicas"`
	// +optional
	Weights []ClusterWeight `json:"weights,omitempty"`
}

// ClusterWeight sets a selected cluster's share and bounds.
type ClusterWeight struct {
	ClusterSelection `json:",inline"`
	// +kubebuilder:validation:Minimum=0
	Weight int32 `json:"weight"`
	// +optional
	// +kubebuilder:validation:Minimum=0
	Min *int32 `json:"min,omitempty"`
	// +optional
	// +kubebuilder:validation:Minimum=0
	Max *int32 `json:"max,omitempty"`
}

// Per-cluster propagation states.
const (
	StateApplied = "Applied"
	StatePending = "Pending"
	StateFailed  = "Failed"
)

// Condition types of a Propagation.
const (
	// PropagationReady is True when every placed cluster has the current
	// generation applied.
	PropagationReady = "Ready"
)

// PropagationStatus reports delivery as counts and conditions, and lists
// only the clusters that need attention, so its size does not grow with
// the fleet: a Propagation over 10,000 clusters that are all Applied lists
// none.
type PropagationStatus struct {
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Clusters lists the clusters that are not Applied at the current
	// generation (Pending or Failed), and those a copy is still to be
	// removed from, failed ones first, at most 100; UnlistedClusters
	// counts the rest.
	// +optional
	// +listType=map
	// +listMapKey=cluster
	// +kubebuilder:validation:MaxItems=100
	Clusters []ClusterPropagationStatus `json:"clusters,omitempty"`
	// UnlistedClusters counts clusters left out of Clusters by its bound.
	// +optional
	UnlistedClusters int32 `json:"unlistedClusters,omitempty"`
	// ReadyClusters counts clusters whose state is Applied at the current
	// generation.
	// +optional
	ReadyClusters int32 `json:"readyClusters"`
	// PendingClusters counts placed clusters that wait: not connected,
	// not Ready (under a replica division) or not registered.
	// +optional
	PendingClusters int32 `json:"pendingClusters,omitempty"`
	// FailedClusters counts placed clusters that refused the object or
	// could not be written.
	// +optional
	FailedClusters int32 `json:"failedClusters,omitempty"`
	// TotalClusters counts placed clusters.
	// +optional
	TotalClusters int32 `json:"totalClusters"`
	// Objects are the objects the template rendered to at the current
	// generation (more than one only when overrides rename the object
	// for some clusters), at most 10.
	// +optional
	// +kubebuilder:validation:MaxItems=10
	Objects []ObjectReference `json:"objects,omitempty"`
	// StaleObjects are objects an earlier generation rendered to (the
	// template was renamed or changed kind) whose copies may remain in
	// members; the controller deletes them, and forgets one once no
	// registered cluster may hold it. At most 10, the oldest dropped.
	// +optional
	// +kubebuilder:validation:MaxItems=10
	StaleObjects []ObjectReference `json:"staleObjects,omitempty"`
}

// ObjectReference names an object a Propagation writes into members.
type ObjectReference struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	// +optional
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
}

// ClusterPropagationStatus is one member's delivery state.
type ClusterPropagationStatus struct {
	Cluster string `json:"cluster"`
	// +kubebuilder:validation:Enum=Applied;Pending;Failed
	State string `json:"state"`
	// ObservedGeneration is the Propagation generation last applied there.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Replicas is the cluster's share under ReplicaDivision.
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`
	// +optional
	Message string `json:"message,omitempty"`
}

// PropagationList is a list of Propagations.
//
// +kubebuilder:object:root=true
type PropagationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Propagation `json:"items"`
}
