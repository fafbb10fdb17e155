package propagation

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
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

// states renders status as "applied=1 b=Pending/0": the count of Applied
// clusters, then the listed ones (not Applied) with their generation.
func states(p *v1alpha1.Propagation) string {
	out := []string{"applied=" + itoa(int64(p.Status.ReadyClusters))}
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
