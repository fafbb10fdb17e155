package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"backhaul.io/backhaul/test/harness"
)

const agentUser = "system:serviceaccount:" + agentNamespace + ":" + agentName

// TestAgentRBAC proves the agent's service account can do its job
// (impersonate the hub's callers, read and rewrite its own Secret, read its
// ConfigMap) and nothing else.
func TestAgentRBAC(t *testing.T) {
	e := requireEnv(t)
	m := e.members[hostMember]
	ctx := testContext(t, 3*time.Minute)

	// Self-contained: applying the base again is a no-op after TestApply.
	if !exists(t, ctx, m, "namespace", agentNamespace) {
		kubectl(t, ctx, m, "create", "namespace", agentNamespace)
	}
	kubectl(t, ctx, m, "apply", "--server-side", "-k", repoPath(t, agentDeployment))
	kubectl(t, ctx, m, "-n", agentNamespace, "create", "secret", "generic", agentName,
		"--from-literal=bootstrap-token=abcdef.0123456789abcdef", "--from-literal=hub-ca.crt=placeholder")
	kubectl(t, ctx, m, "-n", agentNamespace, "create", "configmap", agentName,
		"--from-literal=hub-url=wss://hub.example:8443", "--from-literal=cluster=dep1")
	kubectl(t, ctx, m, "-n", agentNamespace, "create", "secret", "generic", "someone-else", "--from-literal=k=v")
	// alice may read one ConfigMap in default; bob nothing.
	kubectl(t, ctx, m, "-n", "default", "create", "configmap", "for-alice", "--from-literal=k=v")
	kubectl(t, ctx, m, "-n", "default", "create", "role", "read-for-alice", "--verb=get", "--resource=configmaps", "--resource-name=for-alice")
	kubectl(t, ctx, m, "-n", "default", "create", "rolebinding", "read-for-alice", "--role=read-for-alice", "--user=alice")

	token := strings.TrimSpace(kubectl(t, ctx, m, "-n", agentNamespace, "create", "token", agentName, "--duration=10m"))
	as := func(args ...string) (string, error) {
		out, stderr, err := m.KubectlAs(ctx, token, args...)
		return out + stderr, err
	}
	mustAs := func(args ...string) string {
		t.Helper()
		out, err := as(args...)
		if err != nil {
			t.Fatalf("as the agent: %v", err)
		}
		return out
	}
	mustNotAs := func(args ...string) {
		t.Helper()
		out, err := as(args...)
		if err == nil || !strings.Contains(out, "Forbidden") && !strings.Contains(out, "forbidden") {
			t.Errorf("as the agent, kubectl %s: want forbidden, got err=%v:\n%s", strings.Join(args, " "), err, out)
		}
	}

	if who := mustAs("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"); who != agentUser {
		t.Fatalf("the token authenticates as %q, want %q", who, agentUser)
	}

	t.Run("impersonates callers", func(t *testing.T) {
		// Everything the agent sends: user, groups, uid and extras.
		kc := filepath.Join(t.TempDir(), "impersonating.kubeconfig")
		writeImpersonatingKubeconfig(t, kc, m, token)
		cmd := m.Netns.Command(ctx, e.bins.Kubectl, "--kubeconfig="+kc, "auth", "whoami", "-o", "json")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl auth whoami as alice through the agent's account: %v\n%s", err, out)
		}
		var review authnv1.SelfSubjectReview
		if err := json.Unmarshal(out, &review); err != nil {
			t.Fatalf("decode %s: %v", out, err)
		}
		u := review.Status.UserInfo
		if u.Username != "alice" || u.UID != "alice-uid" || !slices.Contains(u.Groups, "fleet-devs") ||
			!reflect.DeepEqual(u.Extra["backhaul.io/hub"], authnv1.ExtraValue{"hub-1"}) {
			t.Errorf("impersonated identity %+v, want alice, uid alice-uid, group fleet-devs, extra backhaul.io/hub=hub-1", u)
		}

		// The member's RBAC decides for the impersonated caller.
		mustAs("--as=alice", "-n", "default", "get", "configmap", "for-alice")
		mustNotAs("--as=bob", "-n", "default", "get", "configmap", "for-alice")
		// Service-account callers are users too.
		if who := mustAs("--as=system:serviceaccount:default:default", "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"); who != "system:serviceaccount:default:default" {
			t.Errorf("impersonating a service account: whoami says %q", who)
		}
	})

	t.Run("own secret and configmap", func(t *testing.T) {
		mustAs("-n", agentNamespace, "get", "secret", agentName)
		mustAs("-n", agentNamespace, "get", "configmap", agentName)
		// What the agent does after enrolling: write its key and certificate.
		mustAs("-n", agentNamespace, "patch", "secret", agentName, "--type=merge",
			"-p", `{"data":{"tls.crt":"Y2VydA==","tls.key":"a2V5"}}`)
		// And an update (PUT) of the whole object.
		js := mustAs("-n", agentNamespace, "get", "secret", agentName, "-o", "json")
		js = strings.Replace(js, `"tls.key": "a2V5"`, `"tls.key": "a2V5Mg=="`, 1)
		f := writeFile(t, "secret.json", js)
		mustAs("-n", agentNamespace, "replace", "-f", f)
		if got := mustAs("-n", agentNamespace, "get", "secret", agentName, "-o", `jsonpath={.data.tls\.key}`); got != "a2V5Mg==" {
			t.Errorf("after replace tls.key = %q", got)
		}
	})

	t.Run("nothing else", func(t *testing.T) {
		mustNotAs("-n", agentNamespace, "get", "secret", "someone-else")
		mustNotAs("-n", agentNamespace, "get", "secrets")
		mustNotAs("-n", agentNamespace, "delete", "secret", agentName)
		mustNotAs("-n", agentNamespace, "patch", "configmap", agentName, "--type=merge", "-p", `{"data":{"cluster":"evil"}}`)
		mustNotAs("-n", "kube-system", "get", "secrets")

		sar := func(attrs authzv1.ResourceAttributes) *authzv1.ResourceAttributes { return &attrs }
		for _, tc := range []struct {
			name  string
			attrs *authzv1.ResourceAttributes
			nonRe *authzv1.NonResourceAttributes
			allow bool
		}{
			// The positive controls show the reviews ask the right question.
			{name: "get own secret", attrs: sar(authzv1.ResourceAttributes{Namespace: agentNamespace, Verb: "get", Resource: "secrets", Name: agentName}), allow: true},
			{name: "impersonate users", attrs: sar(authzv1.ResourceAttributes{Verb: "impersonate", Resource: "users", Name: "alice"}), allow: true},
			{name: "impersonate uids", attrs: sar(authzv1.ResourceAttributes{Verb: "impersonate", Group: "authentication.k8s.io", Resource: "uids", Name: "x"}), allow: true},
			{name: "impersonate any user extra", attrs: sar(authzv1.ResourceAttributes{Verb: "impersonate", Group: "authentication.k8s.io", Resource: "userextras", Subresource: "authentication.kubernetes.io/credential-id", Name: "JTI=1"}), allow: true},
			{name: "create subjectaccessreviews", attrs: sar(authzv1.ResourceAttributes{Verb: "create", Group: "authorization.k8s.io", Resource: "subjectaccessreviews"}), allow: true},
			{name: "create tokenreviews", attrs: sar(authzv1.ResourceAttributes{Verb: "create", Group: "authentication.k8s.io", Resource: "tokenreviews"})},
			{name: "create serviceaccount tokens", attrs: sar(authzv1.ResourceAttributes{Namespace: agentNamespace, Verb: "create", Resource: "serviceaccounts", Subresource: "token", Name: agentName})},
			{name: "delete secrets cluster-wide", attrs: sar(authzv1.ResourceAttributes{Verb: "delete", Resource: "secrets"})},
			{name: "delete own secret", attrs: sar(authzv1.ResourceAttributes{Namespace: agentNamespace, Verb: "delete", Resource: "secrets", Name: agentName})},
			{name: "list secrets in its namespace", attrs: sar(authzv1.ResourceAttributes{Namespace: agentNamespace, Verb: "list", Resource: "secrets"})},
			{name: "watch own secret", attrs: sar(authzv1.ResourceAttributes{Namespace: agentNamespace, Verb: "watch", Resource: "secrets", Name: agentName})},
			{name: "get another secret in its namespace", attrs: sar(authzv1.ResourceAttributes{Namespace: agentNamespace, Verb: "get", Resource: "secrets", Name: "someone-else"})},
			{name: "get secrets in kube-system", attrs: sar(authzv1.ResourceAttributes{Namespace: "kube-system", Verb: "get", Resource: "secrets"})},
			{name: "create pods", attrs: sar(authzv1.ResourceAttributes{Namespace: "default", Verb: "create", Resource: "pods"})},
			{name: "create pods in its namespace", attrs: sar(authzv1.ResourceAttributes{Namespace: agentNamespace, Verb: "create", Resource: "pods"})},
			{name: "get nodes", attrs: sar(authzv1.ResourceAttributes{Verb: "get", Resource: "nodes"})},
			{name: "update configmap", attrs: sar(authzv1.ResourceAttributes{Namespace: agentNamespace, Verb: "update", Resource: "configmaps", Name: agentName})},
			{name: "create clusterrolebindings", attrs: sar(authzv1.ResourceAttributes{Verb: "create", Group: "rbac.authorization.k8s.io", Resource: "clusterrolebindings"})},
			{name: "escalate clusterroles", attrs: sar(authzv1.ResourceAttributes{Verb: "escalate", Group: "rbac.authorization.k8s.io", Resource: "clusterroles"})},
			{name: "create certificatesigningrequests", attrs: sar(authzv1.ResourceAttributes{Verb: "create", Group: "certificates.k8s.io", Resource: "certificatesigningrequests"})},
			{name: "get /metrics", nonRe: &authzv1.NonResourceAttributes{Verb: "get", Path: "/metrics"}},
		} {
			review := authzv1.SubjectAccessReview{
				TypeMeta: metaTypeSAR,
				Spec: authzv1.SubjectAccessReviewSpec{
					User:               agentUser,
					Groups:             []string{"system:serviceaccounts", "system:serviceaccounts:" + agentNamespace, "system:authenticated"},
					ResourceAttributes: tc.attrs, NonResourceAttributes: tc.nonRe,
				},
			}
			allowed, reason := subjectAccessReview(t, ctx, m, review)
			if allowed != tc.allow {
				t.Errorf("SubjectAccessReview %s: allowed=%v (%s), want %v", tc.name, allowed, reason, tc.allow)
			}
		}
	})

	t.Run("bindings", func(t *testing.T) {
		// No binding anywhere but the base's names the agent's account.
		var crbs rbacv1.ClusterRoleBindingList
		decodeJSON(t, kubectl(t, ctx, m, "get", "clusterrolebindings", "-o", "json"), &crbs)
		var rbs rbacv1.RoleBindingList
		decodeJSON(t, kubectl(t, ctx, m, "get", "rolebindings", "-A", "-o", "json"), &rbs)
		var found []string
		names := func(subjects []rbacv1.Subject) bool {
			return slices.ContainsFunc(subjects, func(s rbacv1.Subject) bool {
				return s.Kind == "ServiceAccount" && s.Name == agentName && s.Namespace == agentNamespace ||
					s.Kind == "User" && s.Name == agentUser
			})
		}
		for _, b := range crbs.Items {
			if names(b.Subjects) {
				found = append(found, "ClusterRoleBinding/"+b.Name+"->"+b.RoleRef.Kind+"/"+b.RoleRef.Name)
			}
		}
		for _, b := range rbs.Items {
			if names(b.Subjects) {
				found = append(found, "RoleBinding/"+b.Namespace+"/"+b.Name+"->"+b.RoleRef.Kind+"/"+b.RoleRef.Name)
			}
		}
		slices.Sort(found)
		want := []string{
			"ClusterRoleBinding/backhaul-agent->ClusterRole/backhaul-agent",
			"RoleBinding/backhaul-system/backhaul-agent->Role/backhaul-agent",
		}
		if !reflect.DeepEqual(found, want) {
			t.Errorf("bindings of the agent's account: %v, want %v", found, want)
		}
		var cr rbacv1.ClusterRole
		decodeJSON(t, kubectl(t, ctx, m, "get", "clusterrole", agentName, "-o", "json"), &cr)
		if !reflect.DeepEqual(cr.Rules, wantAgentClusterRules) {
			t.Errorf("ClusterRole %s in the cluster: %+v", agentName, cr.Rules)
		}
		var role rbacv1.Role
		decodeJSON(t, kubectl(t, ctx, m, "-n", agentNamespace, "get", "role", agentName, "-o", "json"), &role)
		if !reflect.DeepEqual(role.Rules, wantAgentRoleRules) {
			t.Errorf("Role %s in the cluster: %+v", agentName, role.Rules)
		}
	})
}

var metaTypeSAR = metav1.TypeMeta{APIVersion: "authorization.k8s.io/v1", Kind: "SubjectAccessReview"}

// subjectAccessReview asks m's authorizer, as admin.
func subjectAccessReview(t *testing.T, ctx context.Context, m *harness.Member, review authzv1.SubjectAccessReview) (bool, string) {
	t.Helper()
	b, err := json.Marshal(review)
	if err != nil {
		t.Fatal(err)
	}
	f := writeFile(t, "sar.json", string(b))
	var got authzv1.SubjectAccessReview
	decodeJSON(t, kubectl(t, ctx, m, "create", "-f", f, "-o", "json"), &got)
	return got.Status.Allowed, got.Status.Reason
}

func decodeJSON(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("decode %T: %v\n%s", v, err, s)
	}
}

// writeImpersonatingKubeconfig writes a kubeconfig for m's API server with
// the agent's token that impersonates alice with every kind of attribute.
func writeImpersonatingKubeconfig(t *testing.T, path string, m *harness.Member, token string) {
	t.Helper()
	ca := filepath.Join(filepath.Dir(path), "ca.crt")
	if err := os.WriteFile(ca, m.CAPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: member
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: agent-as-alice
  user:
    token: %s
    as: alice
    as-uid: alice-uid
    as-groups: [fleet-devs]
    as-user-extra:
      backhaul.io/hub: [hub-1]
contexts:
- name: member
  context: {cluster: member, user: agent-as-alice}
current-context: member
`, m.InternalURL, ca, token)
	if err := os.WriteFile(path, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
}
