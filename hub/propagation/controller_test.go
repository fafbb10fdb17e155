package propagation

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
)

func TestOptions(t *testing.T) {
	if err := DefaultOptions().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if o := (Options{}).withDefaults(); o.Workers != 8 || o.Resync != 30*time.Minute || o.Log == nil {
		t.Errorf("zero options do not take the defaults: %+v", o)
	}
	bad := Options{Workers: -1, Resync: -time.Second, RetryBase: time.Minute, RetryMax: time.Second}
	err := bad.Validate()
	for _, want := range []string{"workers", "resync", "retry max"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate(%+v) = %v, want it to mention %s", bad, err, want)
		}
	}
}

func TestPropagationPredicate(t *testing.T) {
	base := &v1alpha1.Propagation{ObjectMeta: metav1.ObjectMeta{Name: "p", Generation: 1, Finalizers: []string{Finalizer}}}
	now := metav1.Now()
	tests := []struct {
		name   string
		mutate func(*v1alpha1.Propagation)
		want   bool
	}{
		{"status write", func(p *v1alpha1.Propagation) { p.Status.ReadyClusters = 3; p.ResourceVersion = "9" }, false},
		{"spec change", func(p *v1alpha1.Propagation) { p.Generation = 2 }, true},
		{"deletion", func(p *v1alpha1.Propagation) { p.DeletionTimestamp = &now }, true},
		{"finalizer removed by someone", func(p *v1alpha1.Propagation) { p.Finalizers = nil }, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := base.DeepCopy()
			tc.mutate(n)
			if got := propagationChanged.Update(event.UpdateEvent{ObjectOld: base, ObjectNew: n}); got != tc.want {
				t.Errorf("Update = %v, want %v", got, tc.want)
			}
		})
	}
}

func newQueue(t *testing.T) workqueue.TypedRateLimitingInterface[reconcile.Request] {
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	t.Cleanup(q.ShutDown)
	return q
}

func drain(q workqueue.TypedRateLimitingInterface[reconcile.Request]) []string {
	var out []string
	for q.Len() > 0 {
		r, _ := q.Get()
		q.Done(r)
		out = append(out, r.Name)
	}
	slices.Sort(out)
	return out
}

func TestClusterEvents(t *testing.T) {
	e := newEnv(t, cluster("a", map[string]string{"env": "prod"}, true))
	byLabel := cmProp(func(p *v1alpha1.Propagation) {
		p.Name = "by-label"
		p.Spec.Placement = v1alpha1.Placement{ClusterSelection: v1alpha1.ClusterSelection{
			ClusterSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"env": "prod"}}}}
	})
	divided := cmProp(func(p *v1alpha1.Propagation) {
		p.Name = "divided"
		p.Spec.Placement.Clusters = []string{"a"}
		p.Spec.ReplicaDivision = &v1alpha1.ReplicaDivision{Replicas: 2}
	})
	other := cmProp(func(p *v1alpha1.Propagation) {
		p.Name = "other"
		p.Spec.Placement.Clusters = []string{"z"}
	})
	for _, p := range []*v1alpha1.Propagation{byLabel, divided, other} {
		e.create(p)
	}
	h := e.r.clusterHandler()
	ctx := context.Background()
	old := cluster("a", map[string]string{"env": "prod"}, true)

	q := newQueue(t)
	heartbeat := old.DeepCopy()
	heartbeat.Status.LastHeartbeatTime = &metav1.Time{Time: time.Now()}
	h.Update(ctx, event.UpdateEvent{ObjectOld: &old, ObjectNew: heartbeat}, q)
	if got := drain(q); len(got) != 0 {
		t.Errorf("a heartbeat enqueued %v", got)
	}

	notReady := cluster("a", map[string]string{"env": "prod"}, false)
	h.Update(ctx, event.UpdateEvent{ObjectOld: &old, ObjectNew: &notReady}, q)
	if got := drain(q); !slices.Equal(got, []string{"divided"}) {
		t.Errorf("a Ready flip enqueued %v, want [divided]", got)
	}

	relabelled := cluster("a", map[string]string{"env": "dev"}, true)
	h.Update(ctx, event.UpdateEvent{ObjectOld: &old, ObjectNew: &relabelled}, q)
	if got := drain(q); !slices.Equal(got, []string{"by-label", "divided"}) {
		t.Errorf("a label change enqueued %v, want [by-label divided]", got)
	}

	z := cluster("z", nil, true)
	h.Create(ctx, event.CreateEvent{Object: &z}, q)
	if got := drain(q); !slices.Equal(got, []string{"other"}) {
		t.Errorf("registering z enqueued %v, want [other]", got)
	}
}

func TestWakeupsEnqueueIndexedPropagations(t *testing.T) {
	e := newEnv(t, cluster("a", nil, true))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	q := newQueue(t)
	if err := e.r.startWakeups(ctx, q); err != nil {
		t.Fatal(err)
	}
	key := types.NamespacedName{Namespace: "apps", Name: "p"}
	e.r.index.set(key, []string{"a"})
	e.fm.setConnected("a", false)
	got, _ := q.Get()
	q.Done(got)
	if got.NamespacedName != key {
		t.Fatalf("woke %v, want %v", got, key)
	}
}
