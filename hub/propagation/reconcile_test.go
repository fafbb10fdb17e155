package propagation

import (
	"errors"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
)

func TestReconcileAppliesAndWaitsForOfflineClusters(t *testing.T) {
	e := newEnv(t, cluster("a", nil, true), cluster("b", nil, true))
	e.fm.setConnected("b", false)
	key := e.create(cmProp())

	res := e.mustReconcile(key)
	if res.RequeueAfter < e.r.opts.Resync {
		t.Errorf("requeue after %v, want the resync period", res.RequeueAfter)
	}
	p := e.get(key)
	if !controllerutil.ContainsFinalizer(p, Finalizer) {
		t.Error("no finalizer")
	}
	if got := states(p); got != "applied=1 b=Pending/0" {
		t.Fatalf("states %s", got)
	}
	if msg := p.Status.Clusters[0].Message; msg != "cluster b is not connected" {
		t.Errorf("b message %q", msg)
	}
	if p.Status.ReadyClusters != 1 || p.Status.TotalClusters != 2 {
		t.Errorf("ready %d/%d", p.Status.ReadyClusters, p.Status.TotalClusters)
	}
	o := e.fm.member("a").object("ConfigMap", "apps", "cfg")
	if o == nil || o.GetAnnotations()[AnnotationGeneration] != "1" || o.GetLabels()[LabelPropagation] != "apps.cfg" {
		t.Fatalf("a holds %v", o)
	}
	if e.fm.member("b").object("ConfigMap", "apps", "cfg") != nil {
		t.Fatal("b written while offline")
	}

	// An edit while b is offline, then b returns: it gets the edit.
	e.update(key, func(p *v1alpha1.Propagation) {
		p.Spec.Template.Raw = []byte(strings.Replace(configMap, `"k":"v1"`, `"k":"v2"`, 1))
	})
	e.mustReconcile(key)
	e.fm.setConnected("b", true)
	if got := e.r.index.lookup("b"); len(got) != 1 || got[0] != key {
		t.Fatalf("index for b: %v", got)
	}
	select {
	case <-e.r.wake:
	default:
		t.Fatal("reconnecting b did not signal a wakeup")
	}
	e.mustReconcile(key)
	p = e.get(key)
	if got := states(p); got != "applied=2" {
		t.Fatalf("states %s", got)
	}
	o = e.fm.member("b").object("ConfigMap", "apps", "cfg")
	if v := o.Object["data"].(map[string]any)["k"]; v != "v2" || o.GetAnnotations()[AnnotationGeneration] != "2" {
		t.Fatalf("b holds %v", o.Object)
	}
	if c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.PropagationReady); c.Status != metav1.ConditionTrue {
		t.Errorf("Ready %+v", c)
	}
}

func TestReconcileNeverAppliesAnOlderGeneration(t *testing.T) {
	e := newEnv(t, cluster("a", nil, true), cluster("b", nil, true))
	key := e.create(cmProp(func(p *v1alpha1.Propagation) { p.Generation = 4 }))
	p := e.get(key)
	// Status says generation 5 went out: this read of generation 4 is stale.
	p.Status.ObservedGeneration = 5
	if err := e.host.Status().Update(e.ctx, p); err != nil {
		t.Fatal(err)
	}
	res := e.mustReconcile(key)
	for _, c := range []string{"a", "b"} {
		if n, _ := e.fm.member(c).counts(); n != 0 {
			t.Errorf("%s got %d applies of an older generation", c, n)
		}
	}
	if res.RequeueAfter == 0 || res.RequeueAfter > 5*time.Second {
		t.Errorf("requeue after %v, want soon: the newer generation is on its way", res.RequeueAfter)
	}
}

func TestReconcileSkipsUnchangedUntilResync(t *testing.T) {
	e := newEnv(t, cluster("a", nil, true))
	key := e.create(cmProp(func(p *v1alpha1.Propagation) { p.Spec.Placement.Clusters = []string{"a"} }))
	e.mustReconcile(key)
	e.mustReconcile(key)
	if n, _ := e.fm.member("a").counts(); n != 1 {
		t.Fatalf("%d applies, want 1: an unrelated event re-applied", n)
	}
	e.now = e.now.Add(e.r.opts.Resync)
	e.mustReconcile(key)
	if n, _ := e.fm.member("a").counts(); n != 2 {
		t.Fatalf("%d applies, want 2: the resync did not re-apply (drift stays)", n)
	}
	// A cluster that was away gets only what changed meanwhile.
	e.fm.setConnected("a", false)
	e.mustReconcile(key)
	if got := states(e.get(key)); got != "applied=0 a=Pending/1" {
		t.Fatalf("offline: %s", got)
	}
	e.fm.setConnected("a", true)
	e.mustReconcile(key)
	if n, _ := e.fm.member("a").counts(); n != 2 {
		t.Fatalf("%d applies, want still 2: an unchanged object was re-pushed on reconnect", n)
	}
	if got := states(e.get(key)); got != "applied=1" {
		t.Fatalf("back: %s", got)
	}
	e.fm.setConnected("a", false)
	e.update(key, func(p *v1alpha1.Propagation) {
		p.Spec.Template.Raw = []byte(strings.Replace(configMap, `"k":"v1"`, `"k":"v2"`, 1))
	})
	e.mustReconcile(key)
	e.fm.setConnected("a", true)
	e.mustReconcile(key)
	if n, _ := e.fm.member("a").counts(); n != 3 {
		t.Fatalf("%d applies, want 3: the edit made while away was not pushed", n)
	}
}

func TestReconcileReportsMemberErrors(t *testing.T) {
	e := newEnv(t, cluster("a", nil, true), cluster("b", nil, true))
	invalid := apierrors.NewInvalid(schema.GroupKind{Kind: "ConfigMap"}, "cfg",
		field.ErrorList{field.Invalid(field.NewPath("metadata", "name"), "cfg", "a lowercase RFC 1123 subdomain must consist of...")})
	e.fm.member("b").setApplyErr(invalid)
	key := e.create(cmProp())
	_, err := e.reconcile(key)
	var se *SyncError
	if !errors.As(err, &se) || se.Failures["b"] == "" || len(se.Failures) != 1 {
		t.Fatalf("reconcile: %v, want a SyncError for b", err)
	}
	p := e.get(key)
	if got := states(p); got != "applied=1 b=Failed/0" {
		t.Fatalf("states %s", got)
	}
	if msg := p.Status.Clusters[0].Message; msg != invalid.Error() {
		t.Errorf("b message %q, want the member's %q", msg, invalid.Error())
	}
	c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.PropagationReady)
	if c.Reason != ReasonFailed || !strings.Contains(c.Message, "is invalid") {
		t.Errorf("Ready %+v", c)
	}
	e.fm.member("b").setApplyErr(nil)
	e.mustReconcile(key)
	if got := states(e.get(key)); got != "applied=2" {
		t.Fatalf("after recovery: %s", got)
	}
}

func TestReconcileUnknownKindFails(t *testing.T) {
	e := newEnv(t, cluster("a", nil, true))
	key := e.create(newProp(`{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"w"}}`, func(p *v1alpha1.Propagation) {
		p.Spec.Placement.Clusters = []string{"a"}
		p.Generation = 1
	}))
	// Waiting for a kind is retried soon, not with a growing backoff.
	if res, err := e.reconcile(key); err != nil || res.RequeueAfter != e.r.opts.MissingKindRetry {
		t.Fatalf("reconcile = %+v, %v; want a requeue after %v", res, err, e.r.opts.MissingKindRetry)
	}
	if st := e.get(key).Status.Clusters[0]; st.State != v1alpha1.StateFailed || !strings.Contains(st.Message, "Widget") {
		t.Fatalf("status %+v", st)
	}
	// The CRD arrives: the next retry applies.
	e.fm.member("a").addKind(schema.GroupVersionKind{Group: "example.com", Version: "v1", Kind: "Widget"}, "widgets", true)
	e.mustReconcile(key)
	if got := states(e.get(key)); got != "applied=1" {
		t.Fatalf("states %s", got)
	}
}

func TestReconcileInvalidSpec(t *testing.T) {
	e := newEnv(t, cluster("a", nil, true))
	key := e.create(newProp(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{}}`, func(p *v1alpha1.Propagation) { p.Generation = 1 }))
	if _, err := e.reconcile(key); err != nil {
		t.Fatalf("an invalid spec is retried: %v", err)
	}
	c := meta.FindStatusCondition(e.get(key).Status.Conditions, v1alpha1.PropagationReady)
	if c == nil || c.Reason != ReasonInvalidSpec || !strings.Contains(c.Message, "metadata.name") {
		t.Fatalf("Ready %+v", c)
	}
}

func TestReconcileDividesReplicas(t *testing.T) {
	e := newEnv(t, cluster("a", map[string]string{"big": "yes"}, true), cluster("b", nil, true), cluster("c", nil, true))
	key := e.create(newProp(deployment, func(p *v1alpha1.Propagation) {
		p.Generation = 1
		p.Spec.Placement.Clusters = []string{"a", "b", "c"}
		p.Spec.ReplicaDivision = &v1alpha1.ReplicaDivision{Replicas: 10, Weights: []v1alpha1.ClusterWeight{{
			ClusterSelection: v1alpha1.ClusterSelection{ClusterSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"big": "yes"}}}, Weight: 2}}}
	}))
	e.mustReconcile(key)
	replicas := func(c string) int64 {
		o := e.fm.member(c).object("Deployment", "apps", "web")
		n, _, _ := unstructured.NestedInt64(o.Object, "spec", "replicas")
		return n
	}
	if a, b, c := replicas("a"), replicas("b"), replicas("c"); a != 5 || b != 3 || c != 2 {
		t.Fatalf("replicas %d/%d/%d, want 5/3/2", a, b, c)
	}
	// c goes not Ready: its share moves, its copy is left alone.
	var cc v1alpha1.Cluster
	if err := e.host.Get(e.ctx, types.NamespacedName{Name: "c"}, &cc); err != nil {
		t.Fatal(err)
	}
	cc.Status.Conditions[0].Status = metav1.ConditionFalse
	if err := e.host.Status().Update(e.ctx, &cc); err != nil {
		t.Fatal(err)
	}
	e.mustReconcile(key)
	if a, b, c := replicas("a"), replicas("b"), replicas("c"); a != 7 || b != 3 || c != 2 {
		t.Fatalf("replicas %d/%d/%d, want 7/3 and c untouched at 2", a, b, c)
	}
	p := e.get(key)
	st := *entryFor(&p.Status, "c")
	if st.State != v1alpha1.StatePending || st.Replicas == nil || *st.Replicas != 0 || !strings.Contains(st.Message, "not Ready") {
		t.Fatalf("c status %+v", st)
	}
}

func TestReconcileUnregisteredCluster(t *testing.T) {
	e := newEnv(t, cluster("a", nil, true))
	key := e.create(cmProp(func(p *v1alpha1.Propagation) { p.Spec.Placement.Clusters = []string{"a", "later"} }))
	e.mustReconcile(key)
	p := e.get(key)
	if got := states(p); got != "applied=1 later=Pending/0" || p.Status.Clusters[0].Message != "cluster later is not registered" {
		t.Fatalf("states %s (%+v)", got, p.Status.Clusters)
	}
}
