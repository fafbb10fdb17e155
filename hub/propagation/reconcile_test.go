package propagation

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
	"backhaul.io/backhaul/pkg/testutil"
)

const configMap = `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cfg"},"data":{"k":"v1"}}`

// env is a host (controller-runtime fake client) and in-memory members
// around a reconciler, driven by calling Reconcile directly.
type env struct {
	t    *testing.T
	ctx  context.Context
	host client.Client
	fm   *fakeMembers
	r    *reconciler
	now  time.Time
}

func newEnv(t *testing.T, clusters ...v1alpha1.Cluster) *env {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	b := fake.NewClientBuilder().WithScheme(scheme).WithStatusSubresource(&v1alpha1.Propagation{}, &v1alpha1.Cluster{})
	var names []string
	for i := range clusters {
		b = b.WithObjects(&clusters[i])
		names = append(names, clusters[i].Name)
	}
	e := &env{t: t, ctx: context.Background(), host: b.Build(), fm: newFakeMembers(names...), now: time.Unix(1_700_000_000, 0)}
	opts := DefaultOptions()
	opts.Log = testutil.Logger(t)
	e.r = newReconciler(e.host, e.fm, e.fm, opts.withDefaults())
	e.r.now = func() time.Time { return e.now }
	e.fm.Watch(e.r.memberChanged)
	return e
}

func (e *env) create(p *v1alpha1.Propagation) types.NamespacedName {
	e.t.Helper()
	gen := p.Generation
	if err := e.host.Create(e.ctx, p); err != nil {
		e.t.Fatal(err)
	}
	e.setGeneration(p, gen)
	return types.NamespacedName{Namespace: p.Namespace, Name: p.Name}
}

// setGeneration stands in for the API server, which bumps generation on
// spec changes (the fake client does not).
func (e *env) setGeneration(p *v1alpha1.Propagation, gen int64) {
	e.t.Helper()
	cur := e.get(types.NamespacedName{Namespace: p.Namespace, Name: p.Name})
	cur.Generation = gen
	if err := e.host.Update(e.ctx, cur); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) update(key types.NamespacedName, mutate func(*v1alpha1.Propagation)) {
	e.t.Helper()
	p := e.get(key)
	mutate(p)
	p.Generation++
	if err := e.host.Update(e.ctx, p); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) get(key types.NamespacedName) *v1alpha1.Propagation {
	e.t.Helper()
	var p v1alpha1.Propagation
	if err := e.host.Get(e.ctx, key, &p); err != nil {
		e.t.Fatal(err)
	}
	return &p
}

func (e *env) reconcile(key types.NamespacedName) (reconcile.Result, error) {
	return e.r.Reconcile(e.ctx, reconcile.Request{NamespacedName: key})
}

func (e *env) mustReconcile(key types.NamespacedName) reconcile.Result {
	e.t.Helper()
	res, err := e.reconcile(key)
	if err != nil {
		e.t.Fatalf("reconcile: %v", err)
	}
	return res
}

// states renders the per-cluster status as "a=Applied/2 b=Pending/0".
func states(p *v1alpha1.Propagation) string {
	var out []string
	for _, c := range p.Status.Clusters {
		out = append(out, c.Cluster+"="+c.State+"/"+itoa(c.ObservedGeneration))
	}
	return strings.Join(out, " ")
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func cmProp(mutate ...func(*v1alpha1.Propagation)) *v1alpha1.Propagation {
	p := newProp(configMap)
	p.Name = "cfg"
	p.Generation = 1
	for _, m := range mutate {
		m(p)
	}
	return p
}

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
	if got := states(p); got != "a=Applied/1 b=Pending/0" {
		t.Fatalf("states %s", got)
	}
	if msg := p.Status.Clusters[1].Message; msg != "cluster b is not connected" {
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
	if got := states(p); got != "a=Applied/2 b=Applied/2" {
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
	p.Status.Clusters = []v1alpha1.ClusterPropagationStatus{{Cluster: "a", State: v1alpha1.StateApplied, ObservedGeneration: 5}}
	if err := e.host.Status().Update(e.ctx, p); err != nil {
		t.Fatal(err)
	}
	e.mustReconcile(key)
	if n, _ := e.fm.member("a").counts(); n != 0 {
		t.Errorf("a got %d applies of an older generation", n)
	}
	if n, _ := e.fm.member("b").counts(); n != 1 {
		t.Errorf("b got %d applies, want 1", n)
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
	if got := states(e.get(key)); got != "a=Pending/1" {
		t.Fatalf("offline: %s", got)
	}
	e.fm.setConnected("a", true)
	e.mustReconcile(key)
	if n, _ := e.fm.member("a").counts(); n != 2 {
		t.Fatalf("%d applies, want still 2: an unchanged object was re-pushed on reconnect", n)
	}
	if got := states(e.get(key)); got != "a=Applied/1" {
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
	if got := states(p); got != "a=Applied/1 b=Failed/0" {
		t.Fatalf("states %s", got)
	}
	if msg := p.Status.Clusters[1].Message; msg != invalid.Error() {
		t.Errorf("b message %q, want the member's %q", msg, invalid.Error())
	}
	c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.PropagationReady)
	if c.Reason != ReasonFailed || !strings.Contains(c.Message, "is invalid") {
		t.Errorf("Ready %+v", c)
	}
	e.fm.member("b").setApplyErr(nil)
	e.mustReconcile(key)
	if got := states(e.get(key)); got != "a=Applied/1 b=Applied/1" {
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
	if got := states(e.get(key)); got != "a=Applied/1" {
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
	st := p.Status.Clusters[2]
	if st.State != v1alpha1.StatePending || st.Replicas == nil || *st.Replicas != 0 || !strings.Contains(st.Message, "not Ready") {
		t.Fatalf("c status %+v", st)
	}
}

func TestReconcileLeavingPlacementDeletesOwnedCopies(t *testing.T) {
	e := newEnv(t, cluster("a", nil, true), cluster("b", nil, true), cluster("c", nil, true))
	key := e.create(cmProp(func(p *v1alpha1.Propagation) { p.Spec.Placement.Clusters = []string{"a", "b", "c"} }))
	e.mustReconcile(key)

	// c's copy was replaced by someone else's object: not ours to delete.
	foreign := e.fm.member("c").object("ConfigMap", "apps", "cfg")
	foreign.SetAnnotations(nil)
	foreign.SetLabels(nil)
	e.fm.member("c").put(foreign)
	// b is offline when it leaves: its copy goes when it returns.
	e.fm.setConnected("b", false)

	e.update(key, func(p *v1alpha1.Propagation) { p.Spec.Placement.Clusters = []string{"a"} })
	e.mustReconcile(key)
	p := e.get(key)
	if got := states(p); got != "a=Applied/2 b=Pending/1" {
		t.Fatalf("states %s", got)
	}
	if p.Status.TotalClusters != 1 || p.Status.ReadyClusters != 1 {
		t.Errorf("ready %d/%d, want 1/1", p.Status.ReadyClusters, p.Status.TotalClusters)
	}
	if e.fm.member("c").object("ConfigMap", "apps", "cfg") == nil {
		t.Error("deleted an object the propagation does not own")
	}
	if e.fm.member("b").object("ConfigMap", "apps", "cfg") == nil {
		t.Fatal("b's copy vanished while offline")
	}
	e.fm.setConnected("b", true)
	e.mustReconcile(key)
	if e.fm.member("b").object("ConfigMap", "apps", "cfg") != nil {
		t.Fatal("b's copy not deleted after it returned")
	}
	if got := states(e.get(key)); got != "a=Applied/2" {
		t.Fatalf("states %s", got)
	}
}

func TestFinalizeWaitsForOfflineClusters(t *testing.T) {
	e := newEnv(t, cluster("a", nil, true), cluster("b", nil, true), cluster("c", nil, true))
	key := e.create(cmProp(func(p *v1alpha1.Propagation) { p.Spec.Placement.Clusters = []string{"a", "b", "c"} }))
	e.fm.setConnected("c", false) // c never got a copy
	e.mustReconcile(key)
	e.fm.setConnected("b", false) // b holds one

	if err := e.host.Delete(e.ctx, e.get(key)); err != nil {
		t.Fatal(err)
	}
	e.mustReconcile(key)
	if e.fm.member("a").object("ConfigMap", "apps", "cfg") != nil {
		t.Error("a's copy not deleted")
	}
	p := e.get(key)
	if !controllerutil.ContainsFinalizer(p, Finalizer) {
		t.Fatal("finalizer removed while b still holds a copy")
	}
	c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.PropagationReady)
	if c.Reason != ReasonDeleting || !strings.Contains(c.Message, "b (cluster b is not connected") || strings.Contains(c.Message, "c (") {
		t.Errorf("Ready %+v", c)
	}

	// b's Cluster is deleted: nothing more can be done there.
	var b v1alpha1.Cluster
	if err := e.host.Get(e.ctx, types.NamespacedName{Name: "b"}, &b); err != nil {
		t.Fatal(err)
	}
	if err := e.host.Delete(e.ctx, &b); err != nil {
		t.Fatal(err)
	}
	e.mustReconcile(key)
	if err := e.host.Get(e.ctx, key, &v1alpha1.Propagation{}); !apierrors.IsNotFound(err) {
		t.Fatalf("propagation still there: %v", err)
	}
	if got := e.r.index.lookup("a"); len(got) != 0 {
		t.Errorf("index keeps %v", got)
	}
}

func TestFinalizeDeletesWhenTheClusterReturns(t *testing.T) {
	e := newEnv(t, cluster("a", nil, true))
	key := e.create(cmProp(func(p *v1alpha1.Propagation) { p.Spec.Placement.Clusters = []string{"a"} }))
	e.mustReconcile(key)
	e.fm.setConnected("a", false)
	if err := e.host.Delete(e.ctx, e.get(key)); err != nil {
		t.Fatal(err)
	}
	e.mustReconcile(key)
	if !controllerutil.ContainsFinalizer(e.get(key), Finalizer) {
		t.Fatal("finalizer removed while a is offline")
	}
	e.fm.setConnected("a", true)
	e.mustReconcile(key)
	if e.fm.member("a").object("ConfigMap", "apps", "cfg") != nil {
		t.Error("copy not deleted")
	}
	if err := e.host.Get(e.ctx, key, &v1alpha1.Propagation{}); !apierrors.IsNotFound(err) {
		t.Fatalf("propagation still there: %v", err)
	}
}

func TestReconcileUnregisteredCluster(t *testing.T) {
	e := newEnv(t, cluster("a", nil, true))
	key := e.create(cmProp(func(p *v1alpha1.Propagation) { p.Spec.Placement.Clusters = []string{"a", "later"} }))
	e.mustReconcile(key)
	p := e.get(key)
	if got := states(p); got != "a=Applied/1 later=Pending/0" || p.Status.Clusters[1].Message != "cluster later is not registered" {
		t.Fatalf("states %s (%+v)", got, p.Status.Clusters)
	}
}
