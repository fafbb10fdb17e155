package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// rendered is the output of kubectl kustomize, by kind.
type rendered struct {
	objects      []*unstructured.Unstructured
	deployments  []appsv1.Deployment
	daemonSets   []appsv1.DaemonSet
	roles        []rbacv1.Role
	clusterRoles []rbacv1.ClusterRole
	bindings     []rbacv1.RoleBinding
	crBindings   []rbacv1.ClusterRoleBinding
	services     []corev1.Service
	pdbs         []policyv1.PodDisruptionBudget
}

func render(t *testing.T, dir string) *rendered {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), kubectlBinary(t), "kustomize", repoPath(t, dir))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl kustomize %s: %v: %s", dir, err, stderr.String())
	}
	r := &rendered{}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(out), 4096)
	for {
		var raw map[string]any
		if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("%s: decode: %v", dir, err)
		}
		if raw == nil {
			continue
		}
		u := &unstructured.Unstructured{Object: raw}
		r.objects = append(r.objects, u)
		var into any
		switch u.GetKind() {
		case "Deployment":
			r.deployments = append(r.deployments, appsv1.Deployment{})
			into = &r.deployments[len(r.deployments)-1]
		case "DaemonSet":
			r.daemonSets = append(r.daemonSets, appsv1.DaemonSet{})
			into = &r.daemonSets[len(r.daemonSets)-1]
		case "Role":
			r.roles = append(r.roles, rbacv1.Role{})
			into = &r.roles[len(r.roles)-1]
		case "ClusterRole":
			r.clusterRoles = append(r.clusterRoles, rbacv1.ClusterRole{})
			into = &r.clusterRoles[len(r.clusterRoles)-1]
		case "RoleBinding":
			r.bindings = append(r.bindings, rbacv1.RoleBinding{})
			into = &r.bindings[len(r.bindings)-1]
		case "ClusterRoleBinding":
			r.crBindings = append(r.crBindings, rbacv1.ClusterRoleBinding{})
			into = &r.crBindings[len(r.crBindings)-1]
		case "Service":
			r.services = append(r.services, corev1.Service{})
			into = &r.services[len(r.services)-1]
		case "PodDisruptionBudget":
			r.pdbs = append(r.pdbs, policyv1.PodDisruptionBudget{})
			into = &r.pdbs[len(r.pdbs)-1]
		default:
			continue
		}
		b, err := json.Marshal(raw)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, into); err != nil {
			t.Fatalf("%s: %s %s: %v", dir, u.GetKind(), u.GetName(), err)
		}
	}
	return r
}

func (r *rendered) names() []string {
	var s []string
	for _, o := range r.objects {
		n := o.GetKind() + "/" + o.GetName()
		if ns := o.GetNamespace(); ns != "" {
			n = ns + "/" + n
		}
		s = append(s, n)
	}
	return s
}

// checkPod holds every workload to the same bar: non-root 65532, read-only
// root, no capabilities, RuntimeDefault seccomp, probes on the admin port,
// requests and limits, the service account's token mounted.
func checkPod(t *testing.T, what string, spec corev1.PodSpec, wantImage, wantSA string, adminPort int32) {
	t.Helper()
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser != 65532 ||
		psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: pod securityContext %+v: want runAsNonRoot, runAsUser 65532, seccomp RuntimeDefault", what, psc)
	}
	if spec.ServiceAccountName != wantSA {
		t.Errorf("%s: serviceAccountName %q, want %q", what, spec.ServiceAccountName, wantSA)
	}
	if spec.AutomountServiceAccountToken == nil || !*spec.AutomountServiceAccountToken {
		t.Errorf("%s: the service account token must be mounted (in-cluster credentials)", what)
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%s: %d containers, want 1", what, len(spec.Containers))
	}
	c := spec.Containers[0]
	if c.Image != wantImage {
		t.Errorf("%s: image %q, want %q (onboard.sh and users substitute it)", what, c.Image, wantImage)
	}
	sc := c.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser != 65532 ||
		sc.Capabilities == nil || !reflect.DeepEqual(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
		t.Errorf("%s: container securityContext %+v: want read-only root, no privilege escalation, non-root 65532, drop ALL", what, sc)
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"readiness", c.ReadinessProbe, "/readyz"}, {"liveness", c.LivenessProbe, "/healthz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil || p.probe.HTTPGet.Path != p.path {
			t.Errorf("%s: %s probe %+v: want GET %s", what, p.name, p.probe, p.path)
			continue
		}
		if port := containerPort(c, p.probe.HTTPGet.Port.String()); port != adminPort {
			t.Errorf("%s: %s probe on port %s (%d), want %d", what, p.name, p.probe.HTTPGet.Port.String(), port, adminPort)
		}
	}
	for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if _, ok := c.Resources.Requests[res]; !ok {
			t.Errorf("%s: no %s request", what, res)
		}
		if _, ok := c.Resources.Limits[res]; !ok {
			t.Errorf("%s: no %s limit", what, res)
		}
	}
}

// containerPort resolves a probe's port, by number or name.
func containerPort(c corev1.Container, port string) int32 {
	for _, p := range c.Ports {
		if p.Name == port || fmt.Sprint(p.ContainerPort) == port {
			return p.ContainerPort
		}
	}
	return 0
}

func envFrom(c corev1.Container, name string) *corev1.EnvVarSource {
	for _, e := range c.Env {
		if e.Name == name {
			return e.ValueFrom
		}
	}
	return nil
}

// wantAgentRules are all the rights the agent's service account gets. A
// test change here is a security review.
var (
	wantAgentClusterRules = []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"users", "groups", "serviceaccounts"}, Verbs: []string{"impersonate"}},
		// uids and userextras/KEY for any KEY (RBAC has no "all
		// subresources of userextras"; userextras/* matches only "*").
		{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"*"}, Verbs: []string{"impersonate"}},
		// Checking a caller's own impersonation (kubectl --as) with the member.
		{APIGroups: []string{"authorization.k8s.io"}, Resources: []string{"subjectaccessreviews"}, Verbs: []string{"create"}},
	}
	wantAgentRoleRules = []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{agentName}, Verbs: []string{"get", "update", "patch"}},
		{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{agentName}, Verbs: []string{"get"}},
	}
)

// TestManifests checks what the API server cannot: the settings an operator
// relies on in the rendered bases.
func TestManifests(t *testing.T) {
	t.Run("hub", func(t *testing.T) {
		r := render(t, hubBase)
		for _, want := range []string{
			"Namespace/backhaul-system",
			"CustomResourceDefinition/clusters.backhaul.io",
			"CustomResourceDefinition/propagations.backhaul.io",
			"CustomResourceDefinition/hubreplicas.backhaul.io",
			"backhaul-system/ServiceAccount/backhaul-hub",
			"ClusterRole/backhaul-hub", "ClusterRoleBinding/backhaul-hub",
			"backhaul-system/Role/backhaul-hub", "backhaul-system/RoleBinding/backhaul-hub",
			"backhaul-system/ConfigMap/backhaul-hub-config",
			"backhaul-system/Deployment/backhaul-hub",
			"backhaul-system/PodDisruptionBudget/backhaul-hub",
			"backhaul-system/Service/backhaul-hub",
			"backhaul-system/Service/backhaul-hub-peers",
		} {
			if !slices.Contains(r.names(), want) {
				t.Errorf("missing %s in %s: %v", want, hubBase, r.names())
			}
		}
		if len(r.deployments) != 1 {
			t.Fatalf("%d deployments", len(r.deployments))
		}
		d := r.deployments[0]
		if d.Spec.Replicas == nil || *d.Spec.Replicas != 3 {
			t.Errorf("hub replicas %v, want 3", d.Spec.Replicas)
		}
		spec := d.Spec.Template.Spec
		checkPod(t, "hub", spec, "backhaul-hub:latest", "backhaul-hub", 9090)
		aff := spec.Affinity
		if aff == nil || aff.PodAntiAffinity == nil || len(aff.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) != 1 ||
			aff.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm.TopologyKey != "kubernetes.io/hostname" {
			t.Errorf("hub: want a preferred pod anti-affinity by hostname, got %+v", aff)
		}
		c := spec.Containers[0]
		for _, a := range []string{"--registry=kube", "--namespace=$(POD_NAMESPACE)", "--listen=:8443", "--connect-listen=:8444",
			"--connect-tls", "--metrics-listen=:9090", "--advertise-url=$(ADVERTISE_URL)", "--log-format=json",
			"--peer-listen=:8445", "--peers-service=backhaul-hub-peers"} {
			if !slices.Contains(c.Args, a) {
				t.Errorf("hub args %q lack %s", c.Args, a)
			}
		}
		if v := envFrom(c, "ADVERTISE_URL"); v == nil || v.ConfigMapKeyRef == nil ||
			v.ConfigMapKeyRef.Name != "backhaul-hub-config" || v.ConfigMapKeyRef.Key != "advertise-url" {
			t.Errorf("hub: ADVERTISE_URL must come from ConfigMap backhaul-hub-config key advertise-url, got %+v", v)
		}
		if v := envFrom(c, "POD_NAMESPACE"); v == nil || v.FieldRef == nil || v.FieldRef.FieldPath != "metadata.namespace" {
			t.Errorf("hub: POD_NAMESPACE must come from the downward API, got %+v", v)
		}
		// Rollouts and drains proceed: every replica serves, so readiness
		// is "this replica serves" and one may always be away.
		if len(r.pdbs) != 1 || r.pdbs[0].Spec.MaxUnavailable == nil || r.pdbs[0].Spec.MaxUnavailable.IntValue() != 1 {
			t.Errorf("hub: want a PodDisruptionBudget with maxUnavailable 1, got %+v", r.pdbs)
		}
		checkHubServices(t, r)
	})

	for _, tc := range []struct {
		dir  string
		kind string
	}{{agentDeployment, "Deployment"}, {agentDaemonSet, "DaemonSet"}} {
		t.Run(tc.kind, func(t *testing.T) {
			r := render(t, tc.dir)
			for _, o := range r.objects {
				if k := o.GetKind(); k == "Secret" || k == "ConfigMap" {
					t.Errorf("%s renders %s/%s: per-cluster values belong to onboard.sh", tc.dir, k, o.GetName())
				}
			}
			var spec corev1.PodSpec
			switch {
			case tc.kind == "Deployment" && len(r.deployments) == 1 && len(r.daemonSets) == 0:
				spec = r.deployments[0].Spec.Template.Spec
			case tc.kind == "DaemonSet" && len(r.daemonSets) == 1 && len(r.deployments) == 0:
				spec = r.daemonSets[0].Spec.Template.Spec
			default:
				t.Fatalf("%s: want exactly one %s as the workload, got %v", tc.dir, tc.kind, r.names())
			}
			checkPod(t, tc.kind, spec, "backhaul-agent:latest", agentName, 9090)
			c := spec.Containers[0]
			wantArgs := []string{"--hub-url=$(HUB_URL)", "--cluster=$(CLUSTER)",
				"--credentials-secret=$(POD_NAMESPACE)/backhaul-agent", "--admin-listen=:9090", "--log-format=json"}
			if tc.kind == "DaemonSet" {
				wantArgs = append(wantArgs, "--node-name=$(NODE_NAME)", "--node-addresses=$(NODE_IP)")
			}
			for _, a := range wantArgs {
				if !slices.Contains(c.Args, a) {
					t.Errorf("%s args %q lack %s", tc.kind, c.Args, a)
				}
			}
			for env, key := range map[string]string{"HUB_URL": "hub-url", "CLUSTER": "cluster"} {
				if v := envFrom(c, env); v == nil || v.ConfigMapKeyRef == nil || v.ConfigMapKeyRef.Name != agentName || v.ConfigMapKeyRef.Key != key {
					t.Errorf("%s: %s must come from ConfigMap %s key %s, got %+v", tc.kind, env, agentName, key, v)
				}
			}
			fields := map[string]string{"POD_NAMESPACE": "metadata.namespace"}
			if tc.kind == "DaemonSet" {
				fields["NODE_NAME"] = "spec.nodeName"
				fields["NODE_IP"] = "status.hostIP"
				if !spec.HostNetwork || spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
					t.Errorf("DaemonSet: hostNetwork %v dnsPolicy %q, want true and ClusterFirstWithHostNet", spec.HostNetwork, spec.DNSPolicy)
				}
				for _, key := range []string{"node-role.kubernetes.io/edge", "node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready"} {
					ok := slices.ContainsFunc(spec.Tolerations, func(tol corev1.Toleration) bool {
						return tol.Key == key && tol.Operator == corev1.TolerationOpExists && tol.Effect == ""
					})
					if !ok {
						t.Errorf("DaemonSet: no toleration of %s with operator Exists (all effects)", key)
					}
				}
			}
			for env, path := range fields {
				if v := envFrom(c, env); v == nil || v.FieldRef == nil || v.FieldRef.FieldPath != path {
					t.Errorf("%s: %s must come from the downward API %s, got %+v", tc.kind, env, path, v)
				}
			}

			// The agent's rights, exactly.
			if len(r.clusterRoles) != 1 || !reflect.DeepEqual(r.clusterRoles[0].Rules, wantAgentClusterRules) {
				t.Errorf("agent ClusterRoles %+v, want one with %+v", r.clusterRoles, wantAgentClusterRules)
			}
			if len(r.roles) != 1 || !reflect.DeepEqual(r.roles[0].Rules, wantAgentRoleRules) {
				t.Errorf("agent Roles %+v, want one with %+v", r.roles, wantAgentRoleRules)
			}
			sa := rbacv1.Subject{Kind: "ServiceAccount", Name: agentName, Namespace: agentNamespace}
			if len(r.crBindings) != 1 || !reflect.DeepEqual(r.crBindings[0].Subjects, []rbacv1.Subject{sa}) ||
				r.crBindings[0].RoleRef.Name != agentName {
				t.Errorf("agent ClusterRoleBindings %+v", r.crBindings)
			}
			if len(r.bindings) != 1 || !reflect.DeepEqual(r.bindings[0].Subjects, []rbacv1.Subject{sa}) ||
				r.bindings[0].RoleRef.Name != agentName {
				t.Errorf("agent RoleBindings %+v", r.bindings)
			}
		})
	}
}

// TestApply applies each base to a real kube-apiserver: a server-side dry
// run, then for real, then again, which must change nothing.
func TestApply(t *testing.T) {
	e := requireEnv(t)
	m := e.members[hostMember]
	ctx := testContext(t, 3*time.Minute)

	// Admission rejects even a dry-run create into a namespace that does
	// not exist yet (NamespaceLifecycle), and the dry run only pretends to
	// create it. Every base creates backhaul-system first, so only the dry
	// run needs it to exist.
	kubectl(t, ctx, m, "create", "namespace", agentNamespace)

	// Hub first: its host cluster is often a member too, so the agent's
	// bases must apply beside it without a conflict.
	for _, dir := range []string{hubBase, agentDeployment, agentDaemonSet} {
		t.Run(strings.ReplaceAll(dir, "/", "_"), func(t *testing.T) {
			path := repoPath(t, dir)
			// Client-side apply too (docs/install.md shows it): its
			// last-applied annotation must fit, the CRDs' included.
			out := kubectl(t, ctx, m, "apply", "--dry-run=server", "-k", path)
			t.Logf("client-side dry run:\n%s", out)
			out = kubectl(t, ctx, m, "apply", "--server-side", "--dry-run=server", "-k", path)
			t.Logf("dry run:\n%s", out)
			out = kubectl(t, ctx, m, "apply", "--server-side", "-k", path)
			t.Logf("apply:\n%s", out)
			if dir == hubBase {
				kubectl(t, ctx, m, "wait", "--for=condition=Established", "--timeout=60s",
					"crd/clusters.backhaul.io", "crd/propagations.backhaul.io")
			}
			before := resourceVersions(t, ctx, m, path)
			kubectl(t, ctx, m, "apply", "--server-side", "-k", path)
			after := resourceVersions(t, ctx, m, path)
			if !reflect.DeepEqual(before, after) {
				t.Errorf("a second apply changed objects:\nbefore %v\nafter  %v", before, after)
			}
			// kubectl diff exits 1 when it finds a difference.
			if out, stderr, err := m.Kubectl(ctx, "diff", "--server-side", "-k", path); err != nil {
				t.Errorf("kubectl diff after apply: %v\n%s%s", err, out, stderr)
			}
		})
	}

	// The CRDs serve their kinds.
	out := kubectl(t, ctx, m, "api-resources", "--api-group=backhaul.io", "-o", "name")
	for _, want := range []string{"clusters.backhaul.io", "propagations.backhaul.io"} {
		if !strings.Contains(out, want) {
			t.Errorf("api-resources lacks %s:\n%s", want, out)
		}
	}
}

// resourceVersions maps every object of the kustomization at path to its
// resourceVersion.
func resourceVersions(t *testing.T, ctx context.Context, m interface {
	Kubectl(context.Context, ...string) (string, string, error)
}, path string) map[string]string {
	t.Helper()
	out, _, err := m.Kubectl(ctx, "get", "-k", path, "-o",
		`jsonpath={range .items[*]}{.kind}/{.metadata.namespace}/{.metadata.name}={.metadata.resourceVersion}{"\n"}{end}`)
	if err != nil {
		t.Fatal(err)
	}
	rv := map[string]string{}
	for line := range strings.Lines(out) {
		k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
		if ok {
			rv[k] = v
		}
	}
	if len(rv) == 0 {
		t.Fatalf("no objects from %s", path)
	}
	return rv
}

// checkHubServices: the client Service selects every replica (no leader
// label), and the headless peer Service lists them on port "peer". The
// metrics port is on a Service of its own, never on the one a load
// balancer exposes.
func checkHubServices(t *testing.T, r *rendered) {
	t.Helper()
	if len(r.services) != 3 {
		t.Fatalf("%d services, want the hub's, its metrics' and its peers'", len(r.services))
	}
	for _, svc := range r.services {
		ports := map[string]int32{}
		for _, p := range svc.Spec.Ports {
			ports[p.Name] = p.Port
		}
		want := map[string]int32{"tunnel": 8443, "connect": 8444}
		if svc.Name == "backhaul-hub-metrics" {
			want = map[string]int32{"metrics": 9090}
		}
		if svc.Name == "backhaul-hub-peers" {
			want = map[string]int32{"peer": 8445}
			if svc.Spec.ClusterIP != "None" {
				t.Errorf("peer service must be headless, clusterIP %q", svc.Spec.ClusterIP)
			}
		}
		if !reflect.DeepEqual(ports, want) {
			t.Errorf("%s ports %v, want %v", svc.Name, ports, want)
		}
		if want := map[string]string{"app.kubernetes.io/name": "backhaul-hub"}; !reflect.DeepEqual(svc.Spec.Selector, want) {
			t.Errorf("%s selects %v, want every hub replica %v", svc.Name, svc.Spec.Selector, want)
		}
	}
}
