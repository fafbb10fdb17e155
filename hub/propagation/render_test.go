package propagation

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"

	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
)

const deployment = `{
  "apiVersion": "apps/v1", "kind": "Deployment",
  "metadata": {"name": "web", "labels": {"app": "web"}, "resourceVersion": "42", "uid": "u"},
  "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
    "template": {"metadata": {"labels": {"app": "web"}},
      "spec": {"containers": [{"name": "web", "image": "web:1"}]}}},
  "status": {"replicas": 1}
}`

func op(o, path string, value any) v1alpha1.JSONPatchOperation {
	p := v1alpha1.JSONPatchOperation{Op: o, Path: path}
	if value != nil {
		b, _ := json.Marshal(value)
		p.Value = &apiextensionsv1.JSON{Raw: b}
	}
	return p
}

func newProp(template string, mutate ...func(*v1alpha1.Propagation)) *v1alpha1.Propagation {
	p := &v1alpha1.Propagation{
		ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: "web", Generation: 3},
		Spec: v1alpha1.PropagationSpec{
			Template:  runtime.RawExtension{Raw: []byte(template)},
			Placement: v1alpha1.Placement{ClusterSelection: v1alpha1.ClusterSelection{Clusters: []string{"a", "b"}}},
		},
	}
	for _, m := range mutate {
		m(p)
	}
	return p
}

func cluster(name string, lbls map[string]string, ready bool) v1alpha1.Cluster {
	c := v1alpha1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls}}
	st := metav1.ConditionFalse
	if ready {
		st = metav1.ConditionTrue
	}
	c.Status.Conditions = []metav1.Condition{{Type: v1alpha1.ClusterReady, Status: st, Reason: "Test"}}
	return c
}

// The clusters renderTests render for: a at the edge, b in the core.
var (
	renderA = cluster("a", map[string]string{"tier": "edge"}, true)
	renderB = cluster("b", map[string]string{"tier": "core"}, true)
)

var renderTests = []struct {
	name       string
	prop       *v1alpha1.Propagation
	target     target
	namespaced bool
	replicas   *int32
	check      func(t *testing.T, u *unstructured.Unstructured)
	wantErr    string
}{
	{
		name: "namespace defaulted, server fields and status dropped, marks added",
		prop: newProp(deployment), target: target{name: "a", cluster: &renderA}, namespaced: true,
		check: func(t *testing.T, u *unstructured.Unstructured) {
			if u.GetNamespace() != "apps" {
				t.Errorf("namespace %q, want apps", u.GetNamespace())
			}
			if u.GetResourceVersion() != "" || u.GetUID() != "" {
				t.Errorf("server fields kept: rv %q uid %q", u.GetResourceVersion(), u.GetUID())
			}
			if _, ok := u.Object["status"]; ok {
				t.Error("status kept")
			}
			if got := u.GetLabels(); got["app"] != "web" || got[LabelPropagation] != "apps.web" {
				t.Errorf("labels %v", got)
			}
			if got := u.GetAnnotations(); got[AnnotationPropagation] != "apps/web" || got[AnnotationGeneration] != "3" {
				t.Errorf("annotations %v", got)
			}
		},
	},
	{
		name:   "explicit namespace kept",
		prop:   newProp(strings.Replace(deployment, `"name": "web",`, `"name": "web", "namespace": "other",`, 1)),
		target: target{name: "a", cluster: &renderA}, namespaced: true,
		check: func(t *testing.T, u *unstructured.Unstructured) {
			if u.GetNamespace() != "other" {
				t.Errorf("namespace %q, want other", u.GetNamespace())
			}
		},
	},
	{
		name:   "cluster-scoped kind loses the namespace",
		prop:   newProp(`{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole","metadata":{"name":"r","namespace":"x"}}`),
		target: target{name: "a", cluster: &renderA},
		check: func(t *testing.T, u *unstructured.Unstructured) {
			if u.GetNamespace() != "" {
				t.Errorf("namespace %q, want none", u.GetNamespace())
			}
		},
	},
	{
		name: "overrides apply in order to the clusters they select",
		prop: newProp(deployment, func(p *v1alpha1.Propagation) {
			p.Spec.Overrides = []v1alpha1.Override{
				{ClusterSelection: v1alpha1.ClusterSelection{ClusterSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "edge"}}},
					Patches: []v1alpha1.JSONPatchOperation{op("replace", "/spec/template/spec/containers/0/image", "web:edge")}},
				{ClusterSelection: v1alpha1.ClusterSelection{Clusters: []string{"b"}},
					Patches: []v1alpha1.JSONPatchOperation{op("replace", "/spec/template/spec/containers/0/image", "web:b")}},
				{ClusterSelection: v1alpha1.ClusterSelection{Clusters: []string{"a"}},
					Patches: []v1alpha1.JSONPatchOperation{
						op("test", "/spec/template/spec/containers/0/image", "web:edge"),
						op("add", "/metadata/labels/site", "a"),
					}},
			}
		}),
		target: target{name: "a", cluster: &renderA}, namespaced: true,
		check: func(t *testing.T, u *unstructured.Unstructured) {
			c, _, _ := unstructured.NestedSlice(u.Object, "spec", "template", "spec", "containers")
			if img := c[0].(map[string]any)["image"]; img != "web:edge" {
				t.Errorf("image %v, want web:edge", img)
			}
			if u.GetLabels()["site"] != "a" {
				t.Errorf("labels %v, want site=a", u.GetLabels())
			}
		},
	},
	{
		name: "an override for another cluster does nothing",
		prop: newProp(deployment, func(p *v1alpha1.Propagation) {
			p.Spec.Overrides = []v1alpha1.Override{{ClusterSelection: v1alpha1.ClusterSelection{Clusters: []string{"a"}},
				Patches: []v1alpha1.JSONPatchOperation{op("replace", "/spec/template/spec/containers/0/image", "web:a")}}}
		}),
		target: target{name: "b", cluster: &renderB}, namespaced: true,
		check: func(t *testing.T, u *unstructured.Unstructured) {
			c, _, _ := unstructured.NestedSlice(u.Object, "spec", "template", "spec", "containers")
			if img := c[0].(map[string]any)["image"]; img != "web:1" {
				t.Errorf("image %v, want web:1", img)
			}
		},
	},
	{
		name: "replicas set last, over an override",
		prop: newProp(deployment, func(p *v1alpha1.Propagation) {
			p.Spec.Overrides = []v1alpha1.Override{{ClusterSelection: v1alpha1.ClusterSelection{Clusters: []string{"a"}},
				Patches: []v1alpha1.JSONPatchOperation{op("replace", "/spec/replicas", 9)}}}
		}),
		target: target{name: "a", cluster: &renderA}, namespaced: true, replicas: i32(4),
		check: func(t *testing.T, u *unstructured.Unstructured) {
			if n, _, _ := unstructured.NestedInt64(u.Object, "spec", "replicas"); n != 4 {
				t.Errorf("replicas %d, want 4", n)
			}
		},
	},
	{
		name: "a failing patch names its override",
		prop: newProp(deployment, func(p *v1alpha1.Propagation) {
			p.Spec.Overrides = []v1alpha1.Override{
				{ClusterSelection: v1alpha1.ClusterSelection{Clusters: []string{"b"}}, Patches: []v1alpha1.JSONPatchOperation{op("remove", "/nope", nil)}},
				{ClusterSelection: v1alpha1.ClusterSelection{Clusters: []string{"a"}}, Patches: []v1alpha1.JSONPatchOperation{op("remove", "/spec/nope", nil)}},
			}
		}),
		target: target{name: "a", cluster: &renderA}, namespaced: true,
		wantErr: "overrides[1]",
	},
	{
		// The same semantics as `kubectl patch --type=json`: the
		// API server uses this library too.
		name: "replace of a missing key adds it",
		prop: newProp(deployment, func(p *v1alpha1.Propagation) {
			p.Spec.Overrides = []v1alpha1.Override{{ClusterSelection: v1alpha1.ClusterSelection{Clusters: []string{"a"}},
				Patches: []v1alpha1.JSONPatchOperation{op("replace", "/spec/paused", true)}}}
		}),
		target: target{name: "a", cluster: &renderA}, namespaced: true,
		check: func(t *testing.T, u *unstructured.Unstructured) {
			if v, _, _ := unstructured.NestedBool(u.Object, "spec", "paused"); !v {
				t.Error("spec.paused not set")
			}
		},
	},
	{
		name: "an override removing the name is refused",
		prop: newProp(deployment, func(p *v1alpha1.Propagation) {
			p.Spec.Overrides = []v1alpha1.Override{{ClusterSelection: v1alpha1.ClusterSelection{Clusters: []string{"a"}},
				Patches: []v1alpha1.JSONPatchOperation{op("remove", "/metadata/name", nil)}}}
		}),
		target: target{name: "a", cluster: &renderA}, namespaced: true,
		wantErr: "metadata.name",
	},
}

func TestRender(t *testing.T) {
	for _, tc := range renderTests {
		t.Run(tc.name, func(t *testing.T) {
			pl, err := compile(tc.prop)
			if err != nil {
				t.Fatal(err)
			}
			u, err := pl.render(tc.target, tc.namespaced, tc.replicas)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, u)
			// The template is not modified by rendering.
			if again, _ := pl.render(tc.target, tc.namespaced, tc.replicas); !equalJSON(t, again, u) {
				t.Error("rendering twice differs")
			}
		})
	}
}

func equalJSON(t *testing.T, a, b *unstructured.Unstructured) bool {
	t.Helper()
	da, err := digest(a)
	if err != nil {
		t.Fatal(err)
	}
	db, err := digest(b)
	if err != nil {
		t.Fatal(err)
	}
	return da == db
}

func TestCompileRejects(t *testing.T) {
	tests := []struct {
		name string
		prop *v1alpha1.Propagation
		want string
	}{
		{"empty template", newProp(""), "template"},
		{"no kind", newProp(`{"apiVersion":"v1","metadata":{"name":"x"}}`), "kind"},
		{"no name", newProp(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"generateName":"x-"}}`), "metadata.name"},
		{"bad selector", newProp(deployment, func(p *v1alpha1.Propagation) {
			p.Spec.Placement.ClusterSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "k", Operator: "Bogus"}}}
		}), "placement"},
		{"bad weight selector", newProp(deployment, func(p *v1alpha1.Propagation) {
			p.Spec.ReplicaDivision = &v1alpha1.ReplicaDivision{Replicas: 3, Weights: []v1alpha1.ClusterWeight{{
				ClusterSelection: v1alpha1.ClusterSelection{ClusterSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"k": "bad value!"}}}}}}
		}), "replicaDivision.weights[0]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := compile(tc.prop)
			if !errors.Is(err, errInvalidSpec) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("compile: %v, want errInvalidSpec mentioning %q", err, tc.want)
			}
		})
	}
}

func TestLabelValue(t *testing.T) {
	for _, key := range []types.NamespacedName{
		{Namespace: "apps", Name: "web"},
		{Namespace: strings.Repeat("n", 63), Name: strings.Repeat("x", 253)},
		{Namespace: "a", Name: strings.Repeat("x.", 40) + "y"},
	} {
		v := labelValue(key)
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			t.Errorf("labelValue(%v) = %q: %v", key, v, errs)
		}
	}
	long := types.NamespacedName{Namespace: "a", Name: strings.Repeat("x", 100)}
	other := types.NamespacedName{Namespace: "a", Name: strings.Repeat("x", 99) + "y"}
	if labelValue(long) == labelValue(other) {
		t.Error("long names sharing a prefix collide")
	}
}

func TestOwned(t *testing.T) {
	key := types.NamespacedName{Namespace: "apps", Name: "web"}
	pl, err := compile(newProp(deployment))
	if err != nil {
		t.Fatal(err)
	}
	u, err := pl.render(target{name: "a"}, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !owned(u, key) {
		t.Error("a rendered copy is not owned by its propagation")
	}
	if owned(u, types.NamespacedName{Namespace: "apps", Name: "other"}) {
		t.Error("a copy is owned by another propagation")
	}
	u.SetAnnotations(nil)
	if owned(u, key) {
		t.Error("an object without the annotation is owned")
	}
}
