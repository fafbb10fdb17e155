package propagation

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
)

// eventFor is the watch event of cluster's copy of key as the fake member
// holds it.
func (e *env) eventFor(cluster string, key types.NamespacedName, deleted bool) copyEvent {
	e.t.Helper()
	o := e.fm.member(cluster).object("ConfigMap", key.Namespace, "cfg")
	if o == nil {
		e.t.Fatalf("%s holds no copy", cluster)
	}
	pm := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{
		Namespace: o.GetNamespace(), Name: o.GetName(), UID: o.GetUID(),
		Labels: o.GetLabels(), Annotations: o.GetAnnotations(), ManagedFields: o.GetManagedFields(),
	}}
	return copyEvent{cluster: cluster, prop: key, id: objectID{resource: "configmaps", namespace: o.GetNamespace(), name: o.GetName()}, obj: pm, deleted: deleted}
}

// woken drains the Propagations the watch callbacks queued.
func (e *env) woken() []types.NamespacedName {
	e.r.wakeMu.Lock()
	defer e.r.wakeMu.Unlock()
	var out []types.NamespacedName
	for k := range e.r.wakeProps {
		out = append(out, k)
	}
	e.r.wakeProps = map[types.NamespacedName]struct{}{}
	return out
}

func TestWatchEventsRevertDriftOnly(t *testing.T) {
	e := newEnv(t, cluster("a", nil, true))
	reg := prometheus.NewRegistry()
	e.r.metrics = NewMetrics(reg)
	key := e.create(cmProp(func(p *v1alpha1.Propagation) { p.Spec.Placement.Clusters = []string{"a"} }))
	e.mustReconcile(key)

	// The event of the controller's own write, and status-only changes,
	// leave the fields it owns as they were: nothing to do.
	e.r.copyChanged(e.eventFor("a", key, false))
	if w := e.woken(); len(w) != 0 {
		t.Fatalf("its own write woke %v", w)
	}

	// Someone takes a field over: the owned set changes.
	ev := e.eventFor("a", key, false)
	ev.obj.ManagedFields[0].FieldsV1 = metav1.NewFieldsV1(`{"f:metadata":{}}`)
	ev.obj.ManagedFields = append(ev.obj.ManagedFields, metav1.ManagedFieldsEntry{Manager: "kubectl-edit", Operation: metav1.ManagedFieldsOperationUpdate,
		FieldsV1: metav1.NewFieldsV1(`{"f:data":{"f:k":{}}}`)})
	e.r.copyChanged(ev)
	if w := e.woken(); len(w) != 1 || w[0] != key {
		t.Fatalf("drift woke %v, want %v", w, key)
	}
	e.mustReconcile(key)
	if n, _ := e.fm.member("a").counts(); n != 2 {
		t.Fatalf("%d applies, want 2: the drifted copy was not applied again", n)
	}
	// Without drift, another reconcile writes nothing.
	e.mustReconcile(key)
	if n, _ := e.fm.member("a").counts(); n != 2 {
		t.Fatalf("%d applies, want still 2", n)
	}

	// Someone deletes the copy.
	e.r.copyChanged(e.eventFor("a", key, true))
	if w := e.woken(); len(w) != 1 {
		t.Fatalf("deletion woke %v", w)
	}
	e.mustReconcile(key)
	if n, _ := e.fm.member("a").counts(); n != 3 {
		t.Fatalf("%d applies, want 3: the deleted copy was not restored", n)
	}
	if got := testutil.ToFloat64(e.r.metrics.drift); got != 2 {
		t.Errorf("drift counter %v, want 2", got)
	}
	if got := testutil.ToFloat64(e.r.metrics.syncs.WithLabelValues(ResultApplied)); got != 3 {
		t.Errorf("applied syncs %v, want 3", got)
	}
	if got := testutil.ToFloat64(e.r.metrics.syncs.WithLabelValues(ResultUnchanged)); got != 1 {
		t.Errorf("unchanged syncs %v, want 1", got)
	}
}

func TestWatchEventDuringAnApplyIsNotDrift(t *testing.T) {
	e := newEnv(t, cluster("a", nil, true))
	key := e.create(cmProp(func(p *v1alpha1.Propagation) { p.Spec.Placement.Clusters = []string{"a"} }))
	e.mustReconcile(key)
	ev := e.eventFor("a", key, false)
	ev.obj.ManagedFields = nil // as before the write completed
	e.r.applied.begin("a", key)
	e.r.copyChanged(ev)
	if w := e.woken(); len(w) != 0 {
		t.Fatalf("an event during the apply woke %v", w)
	}
	rec, _ := e.r.applied.get("a", key)
	if !e.r.applied.put("a", key, rec) {
		t.Error("put did not report the event that arrived during the apply")
	}
}

func TestWatchEventOfAnotherObjectOfThePropagation(t *testing.T) {
	e := newEnv(t, cluster("a", nil, true))
	key := e.create(cmProp(func(p *v1alpha1.Propagation) { p.Spec.Placement.Clusters = []string{"a"} }))
	e.mustReconcile(key)
	ev := e.eventFor("a", key, false)
	ev.id.name, ev.obj.Name = "old", "old"
	e.r.copyChanged(ev)
	if w := e.woken(); len(w) != 1 {
		t.Fatalf("a leftover copy woke %v", w)
	}
	if _, ok := e.r.applied.get("a", key); !ok {
		t.Error("a leftover's event dropped the current copy's record")
	}
}

func TestRenamedTemplateDeletesTheOldCopy(t *testing.T) {
	e := newEnv(t, cluster("a", nil, true), cluster("b", nil, true))
	key := e.create(cmProp())
	e.mustReconcile(key)
	e.fm.setConnected("b", false)
	e.update(key, func(p *v1alpha1.Propagation) {
		p.Spec.Template.Raw = []byte(strings.Replace(configMap, `"name":"cfg"`, `"name":"cfg2"`, 1))
	})
	e.mustReconcile(key)
	if e.fm.member("a").object("ConfigMap", "apps", "cfg") != nil || e.fm.member("a").object("ConfigMap", "apps", "cfg2") == nil {
		t.Fatal("a: the old copy stays or the new one is missing")
	}
	p := e.get(key)
	want := v1alpha1.ObjectReference{APIVersion: "v1", Kind: "ConfigMap", Namespace: "apps", Name: "cfg"}
	if len(p.Status.StaleObjects) != 1 || p.Status.StaleObjects[0] != want {
		t.Fatalf("stale objects %+v, want %+v", p.Status.StaleObjects, want)
	}
	if len(p.Status.Objects) != 1 || p.Status.Objects[0].Name != "cfg2" {
		t.Fatalf("objects %+v", p.Status.Objects)
	}
	if e.fm.member("b").object("ConfigMap", "apps", "cfg") == nil {
		t.Fatal("b's copy touched while offline")
	}
	e.fm.setConnected("b", true)
	e.mustReconcile(key)
	if e.fm.member("b").object("ConfigMap", "apps", "cfg") != nil || e.fm.member("b").object("ConfigMap", "apps", "cfg2") == nil {
		t.Fatal("b: the old copy stays or the new one is missing after it returned")
	}
}

func TestStatusIsBounded(t *testing.T) {
	const n = 10_000
	p := &v1alpha1.Propagation{ObjectMeta: metav1.ObjectMeta{Name: "p", Generation: 3}}
	placed := map[string]bool{}
	var entries []v1alpha1.ClusterPropagationStatus
	for i := range n {
		name := fmt.Sprintf("cluster-%05d", i)
		placed[name] = true
		e := v1alpha1.ClusterPropagationStatus{Cluster: name, State: v1alpha1.StateApplied, ObservedGeneration: 3}
		switch {
		case i%100 == 1:
			e.State, e.Message = v1alpha1.StateFailed, "the member refused it: "+strings.Repeat("x", 200)
		case i%10 == 2:
			e.State, e.ObservedGeneration, e.Message = v1alpha1.StatePending, 2, "cluster "+name+" is not connected"
		}
		entries = append(entries, e)
	}
	st := summarize(p, entries, placed)
	if st.TotalClusters != n || st.FailedClusters != 100 || st.PendingClusters != 1000 || st.ReadyClusters != n-1100 {
		t.Fatalf("counts: total %d ready %d pending %d failed %d", st.TotalClusters, st.ReadyClusters, st.PendingClusters, st.FailedClusters)
	}
	if len(st.Clusters) != MaxStatusClusters || st.UnlistedClusters != 1100-MaxStatusClusters {
		t.Fatalf("listed %d, unlisted %d", len(st.Clusters), st.UnlistedClusters)
	}
	for i, c := range st.Clusters {
		if c.State != v1alpha1.StateFailed {
			t.Fatalf("entry %d is %s: failed clusters are listed first", i, c.State)
		}
	}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	// etcd's object limit is 1.5 MiB; one entry per cluster took ~100
	// bytes, 1 MB at this size.
	if len(b) > 64<<10 {
		t.Errorf("status of a Propagation over %d clusters is %d bytes", n, len(b))
	}
	t.Logf("status over %d clusters, 1,100 not Applied: %d bytes", n, len(b))

	// All Applied: nothing listed.
	for i := range entries {
		entries[i] = v1alpha1.ClusterPropagationStatus{Cluster: entries[i].Cluster, State: v1alpha1.StateApplied, ObservedGeneration: 3}
	}
	st = summarize(p, entries, placed)
	if len(st.Clusters) != 0 || st.UnlistedClusters != 0 || st.ReadyClusters != n {
		t.Fatalf("all applied: listed %d, unlisted %d, ready %d", len(st.Clusters), st.UnlistedClusters, st.ReadyClusters)
	}
}
