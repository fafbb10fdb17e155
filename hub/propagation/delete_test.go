package propagation

import (
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
)

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
	if got := states(p); got != "applied=1 b=Pending/1" {
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
	if got := states(e.get(key)); got != "applied=1" {
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
