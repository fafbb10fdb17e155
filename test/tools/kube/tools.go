//go:build tools

// Package kube pins the upstream Kubernetes binaries the end-to-end suite runs
// (kube-apiserver and kubectl; kubelet, kube-controller-manager,
// kube-scheduler and kube-proxy for the real nodes). It is its own module so the k8s.io/kubernetes
// dependency tree never leaks into Backhaul's go.mod; `make kube-bins` builds
// the commands straight from the module cache.
package kube

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver/app"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	_ "k8s.io/kubernetes/cmd/kube-proxy/app"
	_ "k8s.io/kubernetes/cmd/kube-scheduler/app"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet/app"
)
