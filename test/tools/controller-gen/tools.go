//go:build tools

// Package controllergen pins the controller-gen release `make generate` runs
// for deepcopy functions and CRD manifests. It is its own module so
// controller-tools never enters Backhaul's go.mod.
package controllergen

import _ "sigs.k8s.io/controller-tools/cmd/controller-gen"
