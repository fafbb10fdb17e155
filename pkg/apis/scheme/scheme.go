// Package scheme builds the runtime.Scheme that every client of the hub's
// host cluster uses (hub, backhaulctl, tests): Kubernetes' built-in types
// and backhaul.io/v1alpha1.
package scheme

import (
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
)

// New returns a scheme with the built-in types and backhaul.io/v1alpha1.
func New() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return nil, err
	}
	if err := v1alpha1.AddToScheme(s); err != nil {
		return nil, err
	}
	return s, nil
}
