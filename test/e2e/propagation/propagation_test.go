package propagation

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"backhaul.io/backhaul/hub/propagation"
	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
)

var (
	deploymentsGVR = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	configMapsGVR  = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	widgetsGVR     = schema.GroupVersionResource{Group: "e2e.backhaul.io", Version: "v1", Resource: "widgets"}
	crdsGVR        = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
)

// suiteSelector selects the suite's three members.
var suiteSelector = &metav1.LabelSelector{MatchLabels: map[string]string{e2eLabel: "propagation"}}

func rawJSON(t *testing.T, v any) runtime.RawExtension {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return runtime.RawExtension{Raw: b}
}

func jsonValue(t *testing.T, v any) *apiextensionsv1.JSON {
	t.Helper()
	return &apiextensionsv1.JSON{Raw: rawJSON(t, v).Raw}
}

func deploymentTemplate(name, image string) map[string]any {
	return map[string]any{
		"apiVersion": "apps/v1", "kind": "Deployment",
		"metadata": map[string]any{"name": name, "labels": map[string]any{"app": name}},
		"spec": map[string]any{
			"replicas": 1,
			"selector": map[string]any{"matchLabels": map[string]any{"app": name}},
			"template": map[string]any{
				"metadata": map[string]any{"labels": map[string]any{"app": name}},
				// Never pulled: these members have no nodes.
				"spec": map[string]any{"containers": []any{map[string]any{"name": name, "image": image}}},
			},
		},
	}
}

func configMapTemplate(name, value string) map[string]any {
	return map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": name},
		"data":     map[string]any{"k": value},
	}
}

func newPropagation(t *testing.T, ns, name string, template map[string]any, placement v1alpha1.ClusterSelection) *v1alpha1.Propagation {
	return &v1alpha1.Propagation{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha1.PropagationSpec{
			Template:  rawJSON(t, template),
			Placement: v1alpha1.Placement{ClusterSelection: placement},
		},
	}
}

func (e *environment) create(t *testing.T, p *v1alpha1.Propagation) {
	t.Helper()
	if err := e.hostClient.Create(context.Background(), p); err != nil {
		t.Fatalf("create propagation %s/%s: %v", p.Namespace, p.Name, err)
	}
}

func (e *environment) prop(t *testing.T, p *v1alpha1.Propagation) *v1alpha1.Propagation {
	t.Helper()
	var cur v1alpha1.Propagation
	if err := e.hostClient.Get(context.Background(), client.ObjectKeyFromObject(p), &cur); err != nil {
		t.Fatalf("get propagation: %v", err)
	}
	return &cur
}

// edit changes p's spec (retrying conflicts) and returns the new generation.
func (e *environment) edit(t *testing.T, p *v1alpha1.Propagation, mutate func(*v1alpha1.Propagation)) int64 {
	t.Helper()
	for {
		cur := e.prop(t, p)
		mutate(cur)
		err := e.hostClient.Update(context.Background(), cur)
		if apierrors.IsConflict(err) {
			continue
		}
		if err != nil {
			t.Fatalf("update propagation: %v", err)
		}
		return cur.Generation
	}
}

// describe summarises a Propagation's status for failure messages.
func describe(p *v1alpha1.Propagation) string {
	var b strings.Builder
	fmt.Fprintf(&b, "generation %d, observed %d, ready %d/%d (pending %d, failed %d, unlisted %d)", p.Generation, p.Status.ObservedGeneration,
		p.Status.ReadyClusters, p.Status.TotalClusters, p.Status.PendingClusters, p.Status.FailedClusters, p.Status.UnlistedClusters)
	if c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.PropagationReady); c != nil {
		fmt.Fprintf(&b, ", Ready=%s %s: %s", c.Status, c.Reason, c.Message)
	}
	for _, c := range p.Status.Clusters {
		fmt.Fprintf(&b, "\n  %s %s gen %d", c.Cluster, c.State, c.ObservedGeneration)
		if c.Replicas != nil {
			fmt.Fprintf(&b, " replicas %d", *c.Replicas)
		}
		if c.Message != "" {
			fmt.Fprintf(&b, " (%s)", c.Message)
		}
	}
	return b.String()
}

// waitStatus polls p until cond holds for its status.
func (e *environment) waitStatus(t *testing.T, p *v1alpha1.Propagation, what string, cond func(*v1alpha1.Propagation) bool) *v1alpha1.Propagation {
	t.Helper()
	var cur *v1alpha1.Propagation
	eventually(t, what, func() (bool, string) {
		cur = e.prop(t, p)
		return cond(cur), describe(cur)
	})
	return cur
}

// waitReady waits until every one of total placed clusters has p's
// current generation.
func (e *environment) waitReady(t *testing.T, p *v1alpha1.Propagation, total int32) *v1alpha1.Propagation {
	t.Helper()
	return e.waitStatus(t, p, "propagation ready", func(p *v1alpha1.Propagation) bool {
		c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.PropagationReady)
		return c != nil && c.Status == metav1.ConditionTrue && c.ObservedGeneration == p.Generation &&
			p.Status.ReadyClusters == total && p.Status.TotalClusters == total
	})
}

func clusterStatus(p *v1alpha1.Propagation, cluster string) *v1alpha1.ClusterPropagationStatus {
	for i := range p.Status.Clusters {
		if p.Status.Clusters[i].Cluster == cluster {
			return &p.Status.Clusters[i]
		}
	}
	return nil
}

// memberObject reads an object directly in a member, as its admin.
func (e *environment) memberObject(cluster string, gvr schema.GroupVersionResource, ns, name string) (*unstructured.Unstructured, error) {
	r := e.memberDyn[cluster].Resource(gvr)
	if ns != "" {
		return r.Namespace(ns).Get(context.Background(), name, metav1.GetOptions{})
	}
	return r.Get(context.Background(), name, metav1.GetOptions{})
}

// waitGone waits until the object is absent from the member.
func (e *environment) waitGone(t *testing.T, cluster string, gvr schema.GroupVersionResource, ns, name string) {
	t.Helper()
	eventually(t, fmt.Sprintf("%s %s/%s gone from %s", gvr.Resource, ns, name, cluster), func() (bool, string) {
		_, err := e.memberObject(cluster, gvr, ns, name)
		return apierrors.IsNotFound(err), fmt.Sprintf("get: %v", err)
	})
}

func image(o *unstructured.Unstructured) string {
	cs, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
	if len(cs) == 0 {
		return ""
	}
	s, _ := cs[0].(map[string]any)["image"].(string)
	return s
}

func replicasOf(o *unstructured.Unstructured) int64 {
	n, _, _ := unstructured.NestedInt64(o.Object, "spec", "replicas")
	return n
}

func TestDeploymentBySelectorWithOverride(t *testing.T) {
	e := requireEnv(t)
	ns := e.namespace(t, "prop-deploy")
	p := newPropagation(t, ns, "web", deploymentTemplate("web", "registry.invalid/web:1"), v1alpha1.ClusterSelection{ClusterSelector: suiteSelector})
	p.Spec.Overrides = []v1alpha1.Override{{
		ClusterSelection: v1alpha1.ClusterSelection{Clusters: []string{"pm2"}},
		Patches: []v1alpha1.JSONPatchOperation{{
			Op: "replace", Path: "/spec/template/spec/containers/0/image", Value: jsonValue(t, "registry.invalid/web:pm2"),
		}},
	}}
	e.create(t, p)
	got := e.waitReady(t, p, 3)

	for _, c := range memberNames {
		o, err := e.memberObject(c, deploymentsGVR, ns, "web")
		if err != nil {
			t.Fatalf("%s: %v", c, err)
		}
		want := "registry.invalid/web:1"
		if c == "pm2" {
			want = "registry.invalid/web:pm2"
		}
		if img := image(o); img != want {
			t.Errorf("%s: image %q, want %q", c, img, want)
		}
		if v := o.GetLabels()[propagation.LabelPropagation]; v != ns+".web" {
			t.Errorf("%s: label %s=%q", c, propagation.LabelPropagation, v)
		}
		if v := o.GetAnnotations()[propagation.AnnotationPropagation]; v != ns+"/web" {
			t.Errorf("%s: annotation %s=%q", c, propagation.AnnotationPropagation, v)
		}
		if v := o.GetAnnotations()[propagation.AnnotationGeneration]; v != fmt.Sprint(got.Generation) {
			t.Errorf("%s: generation annotation %q, want %d", c, v, got.Generation)
		}
		applied := false
		for _, mf := range o.GetManagedFields() {
			applied = applied || (mf.Manager == propagation.FieldManager && mf.Operation == metav1.ManagedFieldsOperationApply)
		}
		if !applied {
			t.Errorf("%s: no server-side apply by %q in managedFields", c, propagation.FieldManager)
		}
		if st := clusterStatus(got, c); st != nil {
			t.Errorf("%s: listed in status although Applied: %+v", c, st)
		}
	}
}

func TestReplicaDivision(t *testing.T) {
	e := requireEnv(t)
	ns := e.namespace(t, "prop-divide")
	p := newPropagation(t, ns, "web", deploymentTemplate("web", "registry.invalid/web:1"), v1alpha1.ClusterSelection{ClusterSelector: suiteSelector})
	p.Spec.ReplicaDivision = &v1alpha1.ReplicaDivision{Replicas: 10, Weights: []v1alpha1.ClusterWeight{
		{ClusterSelection: v1alpha1.ClusterSelection{Clusters: []string{"pm1"}}, Weight: 2},
	}}
	e.create(t, p)
	e.waitReady(t, p, 3)

	waitReplicas := func(what string, want map[string]int64) {
		t.Helper()
		eventually(t, what, func() (bool, string) {
			var got []string
			ok := true
			for _, c := range memberNames {
				o, err := e.memberObject(c, deploymentsGVR, ns, "web")
				if err != nil {
					return false, err.Error()
				}
				ok = ok && replicasOf(o) == want[c]
				got = append(got, fmt.Sprintf("%s=%d", c, replicasOf(o)))
			}
			return ok, strings.Join(got, " ")
		})
	}
	waitReplicas("10 over 2:1:1 is 5/3/2", map[string]int64{"pm1": 5, "pm2": 3, "pm3": 2})

	// pm3 stops being Ready: its share moves to pm1 and pm2 (10 over 2:1
	// is 6.67/3.33 → 7/3); its own copy is left as it was.
	ctx := context.Background()
	if err := e.setReady(ctx, "pm3", false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.setReady(ctx, "pm3", true) })
	waitReplicas("re-divided without pm3", map[string]int64{"pm1": 7, "pm2": 3, "pm3": 2})
	e.waitStatus(t, p, "pm3 pending with no share", func(p *v1alpha1.Propagation) bool {
		st := clusterStatus(p, "pm3")
		return st != nil && st.State == v1alpha1.StatePending && st.Replicas != nil && *st.Replicas == 0 && p.Status.ReadyClusters == 2
	})

	if err := e.setReady(ctx, "pm3", true); err != nil {
		t.Fatal(err)
	}
	waitReplicas("back to 5/3/2", map[string]int64{"pm1": 5, "pm2": 3, "pm3": 2})
	e.waitReady(t, p, 3)
}

func TestOfflineMemberCatchesUp(t *testing.T) {
	e := requireEnv(t)
	ns := e.namespace(t, "prop-offline")
	e.disconnect(t, "pm3")
	p := newPropagation(t, ns, "cfg", configMapTemplate("cfg", "one"), v1alpha1.ClusterSelection{Clusters: memberNames})
	e.create(t, p)
	e.waitStatus(t, p, "pm1 and pm2 applied, pm3 pending", func(p *v1alpha1.Propagation) bool {
		st := clusterStatus(p, "pm3")
		return p.Status.ReadyClusters == 2 && st != nil && st.State == v1alpha1.StatePending && st.Message == "cluster pm3 is not connected"
	})
	if _, err := e.memberObject("pm3", configMapsGVR, ns, "cfg"); !apierrors.IsNotFound(err) {
		t.Fatalf("pm3 holds a copy while offline: %v", err)
	}

	// Edit while pm3 is away: that edit, not the first version, must win.
	gen := e.edit(t, p, func(p *v1alpha1.Propagation) {
		p.Spec.Template = rawJSON(t, configMapTemplate("cfg", "two"))
	})
	e.waitStatus(t, p, "the edit applied to pm1 and pm2", func(p *v1alpha1.Propagation) bool {
		return p.Status.ReadyClusters == 2 && p.Status.ObservedGeneration == gen && clusterStatus(p, "pm1") == nil
	})

	e.reconnect("pm3")
	took := eventually(t, "pm3 catches up", func() (bool, string) {
		o, err := e.memberObject("pm3", configMapsGVR, ns, "cfg")
		if err != nil {
			return false, err.Error()
		}
		v, _, _ := unstructured.NestedString(o.Object, "data", "k")
		return v == "two", "data.k=" + v
	})
	t.Logf("pm3 received generation %d %v after its tunnel returned", gen, took.Round(time.Millisecond))
	o, _ := e.memberObject("pm3", configMapsGVR, ns, "cfg")
	if v := o.GetAnnotations()[propagation.AnnotationGeneration]; v != fmt.Sprint(gen) {
		t.Errorf("pm3 copy is generation %s, want %d", v, gen)
	}
	got := e.waitReady(t, p, 3)
	if len(got.Status.Clusters) != 0 || got.Status.ObservedGeneration != gen {
		t.Errorf("want every cluster Applied at generation %d: %s", gen, describe(got))
	}
}

func TestDriftReverted(t *testing.T) {
	e := requireEnv(t)
	ns := e.namespace(t, "prop-drift")
	p := newPropagation(t, ns, "cfg", configMapTemplate("cfg", "desired"), v1alpha1.ClusterSelection{Clusters: []string{"pm1"}})
	e.create(t, p)
	e.waitReady(t, p, 1)
	ctx := context.Background()
	cms := e.memberDyn["pm1"].Resource(configMapsGVR).Namespace(ns)

	// Someone edits the managed field in the member. The member's watch
	// of the copies sees it (the drift counter), not only the resync.
	drift := e.metric(t, "backhaul_propagation_drift_total", nil)
	o, err := cms.Get(ctx, "cfg", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := unstructured.SetNestedField(o.Object, "drifted", "data", "k"); err != nil {
		t.Fatal(err)
	}
	if _, err := cms.Update(ctx, o, metav1.UpdateOptions{FieldManager: "someone"}); err != nil {
		t.Fatal(err)
	}
	took := eventually(t, "drift reverted", func() (bool, string) {
		o, err := cms.Get(ctx, "cfg", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		v, _, _ := unstructured.NestedString(o.Object, "data", "k")
		return v == "desired", "data.k=" + v
	})
	t.Logf("edit reverted after %v (resync %v)", took.Round(time.Millisecond), resync)
	e.driftSeen(t, drift, 1)

	// Someone deletes the copy.
	if err := cms.Delete(ctx, "cfg", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	took = eventually(t, "deleted copy restored", func() (bool, string) {
		_, err := cms.Get(ctx, "cfg", metav1.GetOptions{})
		return err == nil, fmt.Sprint(err)
	})
	t.Logf("deleted copy restored after %v", took.Round(time.Millisecond))
	e.driftSeen(t, drift, 2)
}

func TestCRDInstanceAfterCRD(t *testing.T) {
	e := requireEnv(t)
	ns := e.namespace(t, "prop-crd")
	crd := map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]any{"name": "widgets.e2e.backhaul.io"},
		"spec": map[string]any{
			"group": "e2e.backhaul.io", "scope": "Namespaced",
			"names": map[string]any{"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
			"versions": []any{map[string]any{
				"name": "v1", "served": true, "storage": true,
				"schema": map[string]any{"openAPIV3Schema": map[string]any{
					"type": "object",
					"properties": map[string]any{"spec": map[string]any{
						"type": "object", "properties": map[string]any{"size": map[string]any{"type": "integer"}},
					}},
				}},
			}},
		},
	}
	widget := map[string]any{
		"apiVersion": "e2e.backhaul.io/v1", "kind": "Widget",
		"metadata": map[string]any{"name": "w1"},
		"spec":     map[string]any{"size": 3},
	}
	// The instance first: it waits (Failed, retried) until its kind exists.
	inst := newPropagation(t, ns, "widget", widget, v1alpha1.ClusterSelection{ClusterSelector: suiteSelector})
	def := newPropagation(t, ns, "widget-crd", crd, v1alpha1.ClusterSelection{ClusterSelector: suiteSelector})
	e.create(t, inst)
	e.waitStatus(t, inst, "instance waiting for its kind", func(p *v1alpha1.Propagation) bool {
		st := clusterStatus(p, "pm1")
		return st != nil && st.State == v1alpha1.StateFailed && strings.Contains(st.Message, "Widget")
	})
	t.Cleanup(func() {
		// Drop the CRD copies even if the Propagation's cleanup fails.
		for _, c := range memberNames {
			_ = e.memberDyn[c].Resource(crdsGVR).Delete(context.Background(), "widgets.e2e.backhaul.io", metav1.DeleteOptions{})
		}
	})
	e.create(t, def)
	e.waitReady(t, def, 3)
	took := eventually(t, "instance applied everywhere", func() (bool, string) {
		p := e.prop(t, inst)
		return p.Status.ReadyClusters == 3, describe(p)
	})
	t.Logf("instance applied %v after the CRD's propagation was ready", took.Round(time.Millisecond))
	for _, c := range memberNames {
		o, err := e.memberObject(c, widgetsGVR, ns, "w1")
		if err != nil {
			t.Fatalf("%s: %v", c, err)
		}
		if n, _, _ := unstructured.NestedInt64(o.Object, "spec", "size"); n != 3 {
			t.Errorf("%s: size %d", c, n)
		}
	}
	// Delete the instance's propagation before the CRD's, as an operator
	// would; both clean up.
	if err := e.hostClient.Delete(context.Background(), inst); err != nil {
		t.Fatal(err)
	}
	for _, c := range memberNames {
		e.waitGone(t, c, widgetsGVR, ns, "w1")
	}
	if err := e.hostClient.Delete(context.Background(), def); err != nil {
		t.Fatal(err)
	}
	for _, c := range memberNames {
		e.waitGone(t, c, crdsGVR, "", "widgets.e2e.backhaul.io")
	}
}

func TestLeavingPlacementDeletes(t *testing.T) {
	e := requireEnv(t)
	ctx := context.Background()
	ns := e.namespace(t, "prop-leave")

	// By name.
	byName := newPropagation(t, ns, "by-name", configMapTemplate("by-name", "x"), v1alpha1.ClusterSelection{Clusters: memberNames})
	e.create(t, byName)
	e.waitReady(t, byName, 3)
	e.edit(t, byName, func(p *v1alpha1.Propagation) { p.Spec.Placement.Clusters = []string{"pm1"} })
	e.waitGone(t, "pm2", configMapsGVR, ns, "by-name")
	e.waitGone(t, "pm3", configMapsGVR, ns, "by-name")
	got := e.waitReady(t, byName, 1)
	if len(got.Status.Clusters) != 0 {
		t.Errorf("status still lists the clusters left: %s", describe(got))
	}
	if _, err := e.memberObject("pm1", configMapsGVR, ns, "by-name"); err != nil {
		t.Errorf("pm1 lost its copy: %v", err)
	}

	// By label: pm2 gains, then loses, the label the placement selects.
	const picked = "e2e.backhaul.io/picked"
	relabel := func(value string) {
		t.Helper()
		var c v1alpha1.Cluster
		if err := e.hostClient.Get(ctx, types.NamespacedName{Name: "pm2"}, &c); err != nil {
			t.Fatal(err)
		}
		patch := client.MergeFrom(c.DeepCopy())
		if value == "" {
			delete(c.Labels, picked)
		} else {
			c.Labels[picked] = value
		}
		if err := e.hostClient.Patch(ctx, &c, patch); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { relabel("") })
	byLabel := newPropagation(t, ns, "by-label", configMapTemplate("by-label", "x"),
		v1alpha1.ClusterSelection{ClusterSelector: &metav1.LabelSelector{MatchLabels: map[string]string{picked: "yes"}}})
	e.create(t, byLabel)
	e.waitStatus(t, byLabel, "no cluster selected", func(p *v1alpha1.Propagation) bool {
		c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.PropagationReady)
		return c != nil && c.Reason == propagation.ReasonNoClusters
	})
	relabel("yes")
	e.waitReady(t, byLabel, 1)
	if _, err := e.memberObject("pm2", configMapsGVR, ns, "by-label"); err != nil {
		t.Fatalf("pm2 has no copy after gaining the label: %v", err)
	}
	relabel("")
	e.waitGone(t, "pm2", configMapsGVR, ns, "by-label")
}

func TestDeletingPropagationDeletesAllCopies(t *testing.T) {
	e := requireEnv(t)
	ctx := context.Background()
	ns := e.namespace(t, "prop-delete")
	p := newPropagation(t, ns, "cfg", configMapTemplate("cfg", "x"), v1alpha1.ClusterSelection{ClusterSelector: suiteSelector})
	e.create(t, p)
	e.waitReady(t, p, 3)
	if err := e.hostClient.Delete(ctx, p); err != nil {
		t.Fatal(err)
	}
	for _, c := range memberNames {
		e.waitGone(t, c, configMapsGVR, ns, "cfg")
	}
	eventually(t, "propagation gone", func() (bool, string) {
		err := e.hostClient.Get(ctx, client.ObjectKeyFromObject(p), &v1alpha1.Propagation{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
}

func TestDeletingPropagationWaitsForOfflineMember(t *testing.T) {
	e := requireEnv(t)
	ctx := context.Background()
	ns := e.namespace(t, "prop-delete-offline")
	p := newPropagation(t, ns, "cfg", configMapTemplate("cfg", "x"), v1alpha1.ClusterSelection{ClusterSelector: suiteSelector})
	e.create(t, p)
	e.waitReady(t, p, 3)
	e.disconnect(t, "pm3")
	if err := e.hostClient.Delete(ctx, p); err != nil {
		t.Fatal(err)
	}
	e.waitGone(t, "pm1", configMapsGVR, ns, "cfg")
	e.waitGone(t, "pm2", configMapsGVR, ns, "cfg")
	got := e.waitStatus(t, p, "deletion waits for pm3", func(p *v1alpha1.Propagation) bool {
		c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.PropagationReady)
		return c != nil && c.Reason == propagation.ReasonDeleting && len(p.Status.Clusters) == 1
	})
	if got.DeletionTimestamp == nil || clusterStatus(got, "pm3") == nil {
		t.Fatalf("unexpected state: %s", describe(got))
	}
	if _, err := e.memberObject("pm3", configMapsGVR, ns, "cfg"); err != nil {
		t.Fatalf("pm3's copy touched while offline: %v", err)
	}
	e.reconnect("pm3")
	e.waitGone(t, "pm3", configMapsGVR, ns, "cfg")
	eventually(t, "propagation gone", func() (bool, string) {
		err := e.hostClient.Get(ctx, client.ObjectKeyFromObject(p), &v1alpha1.Propagation{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
}

func TestRejectedObjectFails(t *testing.T) {
	e := requireEnv(t)
	ns := e.namespace(t, "prop-reject")
	p := newPropagation(t, ns, "web", deploymentTemplate("web", "registry.invalid/web:1"), v1alpha1.ClusterSelection{ClusterSelector: suiteSelector})
	// In pm2 the selector no longer matches the pod labels: pm2's API
	// server rejects the Deployment (422).
	p.Spec.Overrides = []v1alpha1.Override{{
		ClusterSelection: v1alpha1.ClusterSelection{Clusters: []string{"pm2"}},
		Patches:          []v1alpha1.JSONPatchOperation{{Op: "replace", Path: "/spec/selector/matchLabels/app", Value: jsonValue(t, "other")}},
	}}
	e.create(t, p)
	got := e.waitStatus(t, p, "pm2 failed, the others applied", func(p *v1alpha1.Propagation) bool {
		st := clusterStatus(p, "pm2")
		return p.Status.ReadyClusters == 2 && st != nil && st.State == v1alpha1.StateFailed
	})
	st := clusterStatus(got, "pm2")
	if !strings.Contains(st.Message, "is invalid") || !strings.Contains(st.Message, "selector") {
		t.Errorf("pm2 message %q, want the member's validation error", st.Message)
	}
	c := meta.FindStatusCondition(got.Status.Conditions, v1alpha1.PropagationReady)
	if c.Status != metav1.ConditionFalse || c.Reason != propagation.ReasonFailed || !strings.Contains(c.Message, "pm2") {
		t.Errorf("Ready %+v", c)
	}
	t.Logf("pm2: %s", st.Message)

	// Fixing the spec clears the failure.
	e.edit(t, p, func(p *v1alpha1.Propagation) { p.Spec.Overrides = nil })
	e.waitReady(t, p, 3)
}
