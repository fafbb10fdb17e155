package propagation

import (
	"context"
	"fmt"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"backhaul.io/backhaul/hub/propagation"
	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
)

var secretsGVR = schema.GroupVersionResource{Version: "v1", Resource: "secrets"}

// metric returns the value of the controller's series name (a counter or
// gauge; a histogram's count) summed over those whose labels include want.
func (e *environment) metric(t *testing.T, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := e.metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		var sum float64
		for _, m := range mf.GetMetric() {
			if hasLabels(m, want) {
				switch {
				case m.Counter != nil:
					sum += m.Counter.GetValue()
				case m.Gauge != nil:
					sum += m.Gauge.GetValue()
				case m.Histogram != nil:
					sum += float64(m.Histogram.GetSampleCount())
				}
			}
		}
		return sum
	}
	t.Fatalf("no series %s", name)
	return 0
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	n := 0
	for _, lp := range m.GetLabel() {
		if v, ok := want[lp.GetName()]; ok && v == lp.GetValue() {
			n++
		}
	}
	return n == len(want)
}

func (e *environment) syncs(t *testing.T, result string) float64 {
	return e.metric(t, "backhaul_propagation_syncs_total", map[string]string{"result": result})
}

// TestSteadyStateWritesNothing: once every copy is applied, the periodic
// full resync (2 s in this suite) checks each copy against the member's
// watch of it and writes nothing.
func TestSteadyStateWritesNothing(t *testing.T) {
	e := requireEnv(t)
	ns := e.namespace(t, "prop-steady")
	var props []*v1alpha1.Propagation
	for i := range 3 {
		name := fmt.Sprintf("cfg-%d", i)
		p := newPropagation(t, ns, name, configMapTemplate(name, "x"), v1alpha1.ClusterSelection{ClusterSelector: suiteSelector})
		e.create(t, p)
		props = append(props, p)
	}
	for _, p := range props {
		e.waitReady(t, p, 3)
	}
	// The watches list after the first applies; give them a resync to
	// vouch for every copy before counting.
	u := e.syncs(t, propagation.ResultUnchanged)
	eventually(t, "a full resync of the new Propagations", func() (bool, string) {
		got := e.syncs(t, propagation.ResultUnchanged)
		return got >= u+9, fmt.Sprintf("%v unchanged syncs since", got-u)
	})
	writes := e.switches.writesIn(ns)
	u = e.syncs(t, propagation.ResultUnchanged)
	eventually(t, "three more full resyncs", func() (bool, string) {
		got := e.syncs(t, propagation.ResultUnchanged)
		return got >= u+27, fmt.Sprintf("%v unchanged syncs since", got-u)
	})
	if got := e.switches.writesIn(ns); got != writes {
		t.Errorf("the controller wrote %d times to members at steady state (resync %v); want none", got-writes, resync)
	}
	if n := e.metric(t, "backhaul_propagation_member_watches", nil); n < 3 {
		t.Errorf("%v member watches open, want at least one per member", n)
	}
	// The other series move too: what was applied is timed and managed,
	// and the work queue counts what went through it.
	for _, m := range []struct {
		name   string
		labels map[string]string
		least  float64
	}{
		{"backhaul_propagation_apply_duration_seconds", map[string]string{"result": propagation.ResultApplied}, 9},
		{"backhaul_propagation_objects_managed", nil, 9},
		{"backhaul_propagation_queue_adds_total", nil, 3},
		{"backhaul_propagation_reconcile_duration_seconds", nil, 3},
	} {
		if got := e.metric(t, m.name, m.labels); got < m.least {
			t.Errorf("%s%v = %v, want at least %v", m.name, m.labels, got, m.least)
		}
	}
}

// TestRenamedTemplateRemovesOldCopies: renaming the template's object,
// then changing its kind, leaves no copy of the old object in any member,
// including one offline during the rename once it returns.
func TestRenamedTemplateRemovesOldCopies(t *testing.T) {
	e := requireEnv(t)
	ns := e.namespace(t, "prop-rename")
	p := newPropagation(t, ns, "cfg", configMapTemplate("first", "x"), v1alpha1.ClusterSelection{ClusterSelector: suiteSelector})
	e.create(t, p)
	e.waitReady(t, p, 3)

	e.disconnect(t, "pm3")
	e.edit(t, p, func(p *v1alpha1.Propagation) { p.Spec.Template = rawJSON(t, configMapTemplate("second", "x")) })
	for _, c := range []string{"pm1", "pm2"} {
		e.waitPresent(t, c, configMapsGVR, ns, "second")
		e.waitGone(t, c, configMapsGVR, ns, "first")
	}
	got := e.waitStatus(t, p, "the old object listed as stale while pm3 is away", func(p *v1alpha1.Propagation) bool {
		return len(p.Status.StaleObjects) == 1 && p.Status.StaleObjects[0].Name == "first" &&
			len(p.Status.Objects) == 1 && p.Status.Objects[0].Name == "second"
	})
	if _, err := e.memberObject("pm3", configMapsGVR, ns, "first"); err != nil {
		t.Fatalf("pm3's copy touched while offline: %v (%s)", err, describe(got))
	}
	e.reconnect("pm3")
	e.waitPresent(t, "pm3", configMapsGVR, ns, "second")
	e.waitGone(t, "pm3", configMapsGVR, ns, "first")
	e.waitStatus(t, p, "no stale object once every member is clean", func(p *v1alpha1.Propagation) bool {
		return len(p.Status.StaleObjects) == 0
	})

	// Another kind, the same name.
	secret := map[string]any{"apiVersion": "v1", "kind": "Secret", "metadata": map[string]any{"name": "second"}, "stringData": map[string]any{"k": "x"}}
	e.edit(t, p, func(p *v1alpha1.Propagation) { p.Spec.Template = rawJSON(t, secret) })
	for _, c := range memberNames {
		e.waitPresent(t, c, secretsGVR, ns, "second")
		e.waitGone(t, c, configMapsGVR, ns, "second")
	}
	e.waitReady(t, p, 3)
}

// TestLeftoverCopyIsRemoved: a copy of a Propagation that its template no
// longer names and that this controller never applied (an earlier
// template's, written before the hub restarted) is found by the member's
// watch and deleted; an object of the same kind that is not a copy is
// left alone.
func TestLeftoverCopyIsRemoved(t *testing.T) {
	e := requireEnv(t)
	ctx := context.Background()
	ns := e.namespace(t, "prop-leftover")
	p := newPropagation(t, ns, "cfg", configMapTemplate("current", "x"), v1alpha1.ClusterSelection{ClusterSelector: suiteSelector})
	e.create(t, p)
	e.waitReady(t, p, 3)

	cms := e.memberDyn["pm2"].Resource(configMapsGVR).Namespace(ns)
	leftover := &unstructured.Unstructured{Object: configMapTemplate("leftover", "old")}
	leftover.SetLabels(map[string]string{propagation.LabelPropagation: ns + ".cfg"})
	leftover.SetAnnotations(map[string]string{propagation.AnnotationPropagation: ns + "/cfg"})
	if _, err := cms.Create(ctx, leftover, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	foreign := &unstructured.Unstructured{Object: configMapTemplate("foreign", "mine")}
	if _, err := cms.Create(ctx, foreign, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.waitGone(t, "pm2", configMapsGVR, ns, "leftover")
	if _, err := e.memberObject("pm2", configMapsGVR, ns, "foreign"); err != nil {
		t.Errorf("an object that is not a copy was touched: %v", err)
	}
	if _, err := e.memberObject("pm2", configMapsGVR, ns, "current"); err != nil {
		t.Errorf("the current copy went: %v", err)
	}
}

// waitPresent waits until the object exists in cluster.
func (e *environment) waitPresent(t *testing.T, cluster string, gvr schema.GroupVersionResource, ns, name string) {
	t.Helper()
	eventually(t, fmt.Sprintf("%s %s/%s in %s", gvr.Resource, ns, name, cluster), func() (bool, string) {
		_, err := e.memberObject(cluster, gvr, ns, name)
		if apierrors.IsNotFound(err) {
			return false, "not found"
		}
		return err == nil, fmt.Sprint(err)
	})
}

// driftSeen waits until the member watches have reported n more drifted
// copies than before.
func (e *environment) driftSeen(t *testing.T, before float64, n int) time.Duration {
	t.Helper()
	return eventually(t, "the member watch reports the drift", func() (bool, string) {
		got := e.metric(t, "backhaul_propagation_drift_total", nil)
		return got >= before+float64(n), fmt.Sprintf("%v drifted copies seen", got-before)
	})
}

// TestHostileMemberCannotGrowTheWatches: a member that holds more objects
// labelled as copies than the controller watches (here 50, in production
// --propagation-max-watched-copies) is not watched, so it cannot make the
// hub keep an unbounded cache; its copies are still kept as applied, by
// the resync re-applying them; once its tunnel comes back with the junk
// gone, it is watched again.
func TestHostileMemberCannotGrowTheWatches(t *testing.T) {
	e := requireEnv(t)
	ctx := context.Background()
	ns := e.namespace(t, "prop-hostile")
	p := newPropagation(t, ns, "real", configMapTemplate("real", "desired"), v1alpha1.ClusterSelection{Clusters: []string{"pm1"}})
	e.create(t, p)
	e.waitReady(t, p, 1)

	refusals := e.metric(t, "backhaul_propagation_member_watch_refusals_total", nil)
	cms := e.memberDyn["pm1"].Resource(configMapsGVR).Namespace(ns)
	for i := range maxWatchedCopies + 10 {
		junk := &unstructured.Unstructured{Object: configMapTemplate(fmt.Sprintf("junk-%03d", i), "x")}
		junk.SetLabels(map[string]string{propagation.LabelPropagation: ns + ".ghost"})
		junk.SetAnnotations(map[string]string{propagation.AnnotationPropagation: ns + "/ghost"})
		if _, err := cms.Create(ctx, junk, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "pm1 no longer watched", func() (bool, string) {
		got := e.metric(t, "backhaul_propagation_member_watch_refusals_total", nil)
		return got > refusals, fmt.Sprintf("%v refusals", got-refusals)
	})

	// Unwatched, pm1's copy is still kept as applied: by the resync.
	edit := func(value string) {
		t.Helper()
		o, err := cms.Get(ctx, "real", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := unstructured.SetNestedField(o.Object, value, "data", "k"); err != nil {
			t.Fatal(err)
		}
		if _, err := cms.Update(ctx, o, metav1.UpdateOptions{FieldManager: "someone"}); err != nil {
			t.Fatal(err)
		}
	}
	reverted := func(what string) {
		t.Helper()
		eventually(t, what, func() (bool, string) {
			o, err := cms.Get(ctx, "real", metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			v, _, _ := unstructured.NestedString(o.Object, "data", "k")
			return v == "desired", "data.k=" + v
		})
	}
	edit("drifted")
	reverted("drift reverted by the resync while pm1 is not watched")

	// The junk goes; pm1's tunnel comes back: watched again (the watch
	// reports the next drift).
	if err := cms.DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: propagation.LabelPropagation + "=" + ns + ".ghost"}); err != nil {
		t.Fatal(err)
	}
	e.disconnect(t, "pm1")
	e.reconnect("pm1")
	drift := e.metric(t, "backhaul_propagation_drift_total", nil)
	eventually(t, "pm1 watched again", func() (bool, string) {
		edit("drifted")
		time.Sleep(500 * time.Millisecond)
		got := e.metric(t, "backhaul_propagation_drift_total", nil)
		return got > drift, fmt.Sprintf("%v drifted copies seen", got-drift)
	})
	reverted("drift reverted")
}
