package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The real kubectl, through the hub only: get, create, server-side apply,
// delete, raw paths, and a CRD created and then used.
func TestKubectlThroughHub(t *testing.T) {
	e := requireEnv(t)
	ctx := context.Background()
	k := func(args ...string) string { return e.kubectl(t, append([]string{"--context", "m1"}, args...)...) }

	assert.Contains(t, k("get", "namespaces", "-o", "name"), "namespace/kube-system")
	assert.Equal(t, "ok", strings.TrimSpace(k("get", "--raw", "/readyz")))

	k("create", "namespace", "e2e-kubectl")
	t.Cleanup(func() {
		_, _ = e.kubectlErr(context.Background(), "--context", "m1", "delete", "namespace", "e2e-kubectl", "--wait=false")
	})
	k("-n", "e2e-kubectl", "create", "configmap", "created", "--from-literal=k=v")
	assert.Equal(t, "v", k("-n", "e2e-kubectl", "get", "configmap", "created", "-o", "jsonpath={.data.k}"))

	applied := `apiVersion: v1
kind: ConfigMap
metadata:
  name: applied
  namespace: e2e-kubectl
data:
  colour: blue
`
	out, err := e.kubectlIn(ctx, applied, "--context", "m1", "apply", "--server-side", "--field-manager=e2e", "-f", "-")
	require.NoError(t, err, out)
	assert.Contains(t, out, "serverside-applied")
	out, err = e.kubectlIn(ctx, strings.Replace(applied, "blue", "green", 1), "--context", "m1", "apply", "--server-side", "--field-manager=e2e", "-f", "-")
	require.NoError(t, err, out)
	// What kubectl wrote through the hub is what the member holds.
	direct, stderr, err := e.members["m1"].Kubectl(ctx, "-n", "e2e-kubectl", "get", "configmap", "applied", "-o", "jsonpath={.data.colour}")
	require.NoError(t, err, stderr)
	assert.Equal(t, "green", direct)

	k("-n", "e2e-kubectl", "delete", "configmap", "created")
	_, err = e.kubectlErr(ctx, "--context", "m1", "-n", "e2e-kubectl", "get", "configmap", "created")
	require.Error(t, err)

	crd := `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.e2e.backhaul.io
spec:
  group: e2e.backhaul.io
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer}
`
	out, err = e.kubectlIn(ctx, crd, "--context", "m1", "apply", "-f", "-")
	require.NoError(t, err, out)
	t.Cleanup(func() {
		_, _ = e.kubectlErr(context.Background(), "--context", "m1", "delete", "crd", "widgets.e2e.backhaul.io", "--wait=false")
	})
	k("wait", "--for=condition=Established", "crd/widgets.e2e.backhaul.io", "--timeout=60s")
	widget := "apiVersion: e2e.backhaul.io/v1\nkind: Widget\nmetadata:\n  name: w1\n  namespace: e2e-kubectl\nspec:\n  size: 3\n"
	require.NoError(t, waitNoErr(30*time.Second, func() error {
		out, err := e.kubectlIn(ctx, widget, "--context", "m1", "apply", "--server-side", "-f", "-")
		if err != nil {
			return &cmdErr{out: out, err: err}
		}
		return nil
	}))
	assert.Equal(t, "3", k("-n", "e2e-kubectl", "get", "widget", "w1", "-o", "jsonpath={.spec.size}"))
	k("-n", "e2e-kubectl", "delete", "widget", "w1")
}

type cmdErr struct {
	out string
	err error
}

func (c *cmdErr) Error() string { return c.err.Error() + ": " + c.out }
