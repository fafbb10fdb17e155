package kubereq

import (
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestLongRunning(t *testing.T) {
	for target, want := range map[string]bool{
		"/api/v1/namespaces/default/pods":                     false,
		"/api/v1/namespaces/default/pods?watch=true":          true,
		"/api/v1/namespaces/default/pods?watch=1":             true,
		"/api/v1/namespaces/default/pods?watch=false":         false,
		"/api/v1/watch/namespaces/default/pods":               true,
		"/apis/apps/v1/deployments?watch=true":                true,
		"/api/v1/namespaces/default/pods/p/log?follow=true":   true,
		"/api/v1/namespaces/default/pods/p/exec?command=sh":   true,
		"/api/v1/namespaces/default/services/s/proxy/healthz": true,
		"/healthz": false,
		"/api/v1/namespaces/default/configmaps/c?fieldManager=x": false,
	} {
		assert.Equal(t, want, LongRunning(Info(httptest.NewRequest("GET", target, nil))), target)
	}
}
