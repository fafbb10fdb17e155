package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupName is the API group of every Backhaul resource.
const GroupName = "backhaul.io"

// SchemeGroupVersion is this package's group and version.
var SchemeGroupVersion = schema.GroupVersion{Group: GroupName, Version: "v1alpha1"}

var (
	// SchemeBuilder registers this package's types.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)
	// AddToScheme adds this package's types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

// Resource names, as RBAC rules and SubjectAccessReviews spell them.
const (
	ResourceClusters     = "clusters"
	ResourcePropagations = "propagations"
	ResourceHubReplicas  = "hubreplicas"
	// SubresourceProxy is what a caller needs "get" on to reach a cluster
	// through the hub's gateway or CONNECT front end.
	SubresourceProxy = "proxy"
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(SchemeGroupVersion,
		&Cluster{}, &ClusterList{},
		&Propagation{}, &PropagationList{},
		&HubReplica{}, &HubReplicaList{},
	)
	metav1.AddToGroupVersion(s, SchemeGroupVersion)
	return nil
}
