package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
)

// asCaller runs kubectl through the hub on cluster with caller's token,
// returning stdout and stderr together.
func (e *environment) asCaller(ctx context.Context, cluster, caller string, args ...string) (string, error) {
	return e.kubectlErr(ctx, append([]string{"--context", cluster, "--token", callers[caller].Token}, args...)...)
}

// asCallerOut is asCaller's stdout alone.
func (e *environment) asCallerOut(ctx context.Context, cluster, caller string, args ...string) string {
	out, _, _ := e.runKubectl(ctx, nil, "", append([]string{"--context", cluster, "--token", callers[caller].Token}, args...)...)
	return out
}

// TestKubectlAsThroughHub: a caller's own impersonation (kubectl --as) is
// honoured where, and only where, the member lets the caller impersonate:
// the agent asks the member with SubjectAccessReviews, as the member's API
// server would, and then acts as the requested identity. Through the hub
// `auth can-i --as` gives the member's own answer (before, the hub dropped
// --as and answered for the caller).
func TestKubectlAsThroughHub(t *testing.T) {
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	m := e.members["m2"]

	// The member: bob may list namespaces; mallory may impersonate bob,
	// and nobody else.
	for _, args := range [][]string{
		{"create", "clusterrole", "e2e-ns-reader", "--verb=get,list", "--resource=namespaces"},
		{"create", "clusterrolebinding", "e2e-bob-ns-reader", "--clusterrole=e2e-ns-reader", "--user=bob"},
		{"create", "clusterrole", "e2e-impersonate-bob", "--verb=impersonate", "--resource=users", "--resource-name=bob"},
		{"create", "clusterrolebinding", "e2e-mallory-as-bob", "--clusterrole=e2e-impersonate-bob", "--user=mallory"},
	} {
		_, stderr, err := m.Kubectl(ctx, args...)
		require.NoError(t, err, stderr)
	}
	t.Cleanup(func() {
		for _, o := range []string{"clusterrolebinding/e2e-bob-ns-reader", "clusterrole/e2e-ns-reader", "clusterrolebinding/e2e-mallory-as-bob", "clusterrole/e2e-impersonate-bob"} {
			_, _, _ = m.Kubectl(context.Background(), "delete", o, "--ignore-not-found")
		}
	})

	t.Run("can-i gives the member's answer", func(t *testing.T) {
		for _, q := range [][]string{
			{"auth", "can-i", "list", "namespaces", "--as=bob"},
			{"auth", "can-i", "create", "namespaces", "--as=bob"},
			{"auth", "can-i", "list", "secrets", "--as=carol"},
		} {
			direct, _, _ := m.Kubectl(ctx, q...)
			through := e.asCallerOut(ctx, "m2", "admin", q...)
			assert.Equal(t, strings.TrimSpace(direct), strings.TrimSpace(through), "%v", q)
		}
		// The caller is cluster-admin; bob may not create namespaces.
		assert.Equal(t, "no", strings.TrimSpace(e.asCallerOut(ctx, "m2", "admin", "auth", "can-i", "create", "namespaces", "--as=bob")))
		assert.Equal(t, "yes", strings.TrimSpace(e.asCallerOut(ctx, "m2", "admin", "auth", "can-i", "create", "namespaces")), "without --as: the caller's own answer")
	})

	t.Run("allowed: the request acts as bob", func(t *testing.T) {
		require.NoError(t, waitNoErr(20*time.Second, func() error {
			_, err := e.asCaller(ctx, "m2", "mallory", "get", "namespaces", "--as=bob")
			return err
		}))
		out, err := e.asCaller(ctx, "m2", "mallory", "create", "namespace", "e2e-as-bob", "--as=bob")
		require.Error(t, err, out)
		assert.Contains(t, out, `User "bob" cannot create resource "namespaces"`, "acting as bob, with bob's rights")
		out, err = e.asCaller(ctx, "m2", "mallory", "auth", "whoami", "--as=bob", "-o", "jsonpath={.status.userInfo.username}")
		require.NoError(t, err, out)
		assert.Equal(t, "bob", out)
	})

	t.Run("refused: the member's 403 names what", func(t *testing.T) {
		out, err := e.asCaller(ctx, "m2", "mallory", "get", "namespaces", "--as=carol")
		require.Error(t, err, out)
		assert.Contains(t, out, `User "mallory" cannot impersonate resource "users" in API group "" at the cluster scope`)
		out, err = e.asCaller(ctx, "m2", "mallory", "get", "namespaces", "--as=bob", "--as-group=ops")
		require.Error(t, err, out)
		assert.Contains(t, out, `cannot impersonate resource "groups"`)
	})

	t.Run("system:masters never passes, even when the member allows it", func(t *testing.T) {
		c := e.restConfig("m2", "admin")
		c.Impersonate.UserName = "system:admin"
		c.Impersonate.Groups = []string{"system:masters"}
		ssr, err := clientFor(t, c).AuthenticationV1().SelfSubjectReviews().Create(ctx, &authnv1.SelfSubjectReview{}, metav1.CreateOptions{})
		require.NoError(t, err)
		assert.Equal(t, "system:admin", ssr.Status.UserInfo.Username)
		assert.NotContains(t, ssr.Status.UserInfo.Groups, "system:masters")
	})
}

// TestCallersCannotActAsTheHub plays callers who try to become the hub's
// push identity, which members bind to cluster-admin: by a host identity in
// the hub's group, and by --as to the hub's user or group from a caller
// the member would otherwise let impersonate anyone.
func TestCallersCannotActAsTheHub(t *testing.T) {
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// client-go, not kubectl: kubectl's discovery prints "unknown" for any
	// 403 body on /api, the member's own included.
	_, err := e.client(t, "m1", "impostor").CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `group "backhaul:propagators" is reserved for the Backhaul hub`)

	for _, as := range []rest.ImpersonationConfig{{UserName: "backhaul:hub"}, {UserName: "alice", Groups: []string{"backhaul:propagators"}}} {
		c := e.restConfig("m1", "admin")
		c.Impersonate = as
		_, err := clientFor(t, c).CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
		require.Error(t, err, "%+v", as)
		assert.Contains(t, err.Error(), "is reserved for the Backhaul hub", "%+v", as)
	}
}

// TestHostServiceAccountIsNotTheMembers: a host service account reaches
// members under the hub's prefix, so the member's service account of the
// same name and its rights are not its.
func TestHostServiceAccountIsNotTheMembers(t *testing.T) {
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m := e.members["m1"]
	// The member's own ci/deployer may do anything.
	for _, args := range [][]string{
		{"create", "namespace", "ci"},
		{"-n", "ci", "create", "serviceaccount", "deployer"},
		{"create", "clusterrolebinding", "e2e-ci-deployer", "--clusterrole=cluster-admin", "--serviceaccount=ci:deployer"},
	} {
		_, stderr, err := m.Kubectl(ctx, args...)
		require.NoError(t, err, stderr)
	}
	t.Cleanup(func() {
		_, _, _ = m.Kubectl(context.Background(), "delete", "clusterrolebinding", "e2e-ci-deployer", "--ignore-not-found")
		_, _, _ = m.Kubectl(context.Background(), "delete", "namespace", "ci", "--wait=false", "--ignore-not-found")
	})
	out, err := e.asCaller(ctx, "m1", "hostsa", "auth", "whoami", "-o", "jsonpath={.status.userInfo.username} {.status.userInfo.groups}")
	require.NoError(t, err, out)
	assert.Equal(t, `backhaul:host:system:serviceaccount:ci:deployer ["system:authenticated"]`, out)
	out, err = e.asCaller(ctx, "m1", "hostsa", "get", "secrets", "-n", "ci")
	require.Error(t, err, out)
	assert.Contains(t, out, `User "backhaul:host:system:serviceaccount:ci:deployer" cannot list resource "secrets"`)
}
