package propagation

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
)

// fakeMembers is a fleet of in-memory members with switchable tunnels.
type fakeMembers struct {
	mu        sync.Mutex
	clusters  map[string]*fakeMember
	connected map[string]bool
	watchers  []func(string)
}

var (
	_ Members   = (*fakeMembers)(nil)
	_ memberSet = (*fakeMembers)(nil)
	_ member    = (*fakeMember)(nil)
)

func newFakeMembers(names ...string) *fakeMembers {
	f := &fakeMembers{clusters: map[string]*fakeMember{}, connected: map[string]bool{}}
	for _, n := range names {
		f.clusters[n] = newFakeMember()
		f.connected[n] = true
	}
	return f
}

func (f *fakeMembers) Config(string) *rest.Config { return nil }

func (f *fakeMembers) Connected(c string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.connected[c]
}

func (f *fakeMembers) Watch(fn func(string)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.watchers = append(f.watchers, fn)
}

func (f *fakeMembers) setConnected(c string, up bool) {
	f.mu.Lock()
	f.connected[c] = up
	ws := f.watchers
	f.mu.Unlock()
	for _, w := range ws {
		w(c)
	}
}

func (f *fakeMembers) get(c string) (member, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := f.clusters[c]
	if m == nil {
		return nil, fmt.Errorf("no member %s", c)
	}
	return m, nil
}

func (f *fakeMembers) forget(string) {}

func (f *fakeMembers) member(c string) *fakeMember {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.clusters[c]
}

// fakeMember stores applied objects by kind, namespace and name.
type fakeMember struct {
	mu       sync.Mutex
	kinds    map[schema.GroupVersionKind]*meta.RESTMapping
	objects  map[string]*unstructured.Unstructured
	applyErr error
	applies  int
	deletes  int
	nextUID  int
}

func newFakeMember() *fakeMember {
	m := &fakeMember{kinds: map[schema.GroupVersionKind]*meta.RESTMapping{}, objects: map[string]*unstructured.Unstructured{}}
	m.addKind(schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}, "deployments", true)
	m.addKind(schema.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}, "configmaps", true)
	m.addKind(schema.GroupVersionKind{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "ClusterRole"}, "clusterroles", false)
	return m
}

func (m *fakeMember) addKind(gvk schema.GroupVersionKind, resource string, namespaced bool) {
	scope := meta.RESTScopeRoot
	if namespaced {
		scope = meta.RESTScopeNamespace
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.kinds[gvk] = &meta.RESTMapping{Resource: gvk.GroupVersion().WithResource(resource), GroupVersionKind: gvk, Scope: scope}
}

// objKey keys a stored object by resource (not version), as an API
// server does.
func objKey(mp *meta.RESTMapping, ns, name string) string {
	return mp.Resource.Group + "/" + mp.Resource.Resource + "/" + ns + "/" + name
}

func (m *fakeMember) Mapping(gvk schema.GroupVersionKind) (*meta.RESTMapping, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if mp := m.kinds[gvk]; mp != nil {
		return mp, nil
	}
	return nil, &meta.NoKindMatchError{GroupKind: gvk.GroupKind(), SearchedVersions: []string{gvk.Version}}
}

// Apply stores obj; the copy's managedFields give FieldManager the
// applied object's fields (its JSON stands in for the field set).
func (m *fakeMember) Apply(_ context.Context, mp *meta.RESTMapping, obj *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.applyErr != nil {
		return nil, m.applyErr
	}
	m.applies++
	k := objKey(mp, obj.GetNamespace(), obj.GetName())
	c := obj.DeepCopy()
	if old := m.objects[k]; old != nil {
		c.SetUID(old.GetUID())
	} else {
		m.nextUID++
		c.SetUID(types.UID(fmt.Sprint(m.nextUID)))
	}
	raw, err := json.Marshal(obj.Object)
	if err != nil {
		return nil, err
	}
	c.SetManagedFields([]metav1.ManagedFieldsEntry{{Manager: FieldManager, Operation: metav1.ManagedFieldsOperationApply, FieldsType: "FieldsV1", FieldsV1: metav1.NewFieldsV1(string(raw))}})
	m.objects[k] = c
	return c.DeepCopy(), nil
}

func (m *fakeMember) Get(_ context.Context, mp *meta.RESTMapping, ns, name string) (*unstructured.Unstructured, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	o := m.objects[objKey(mp, ns, name)]
	if o == nil {
		return nil, apierrors.NewNotFound(mp.Resource.GroupResource(), name)
	}
	return o.DeepCopy(), nil
}

func (m *fakeMember) Delete(_ context.Context, mp *meta.RESTMapping, ns, name string, uid types.UID) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := objKey(mp, ns, name)
	o := m.objects[k]
	if o == nil {
		return apierrors.NewNotFound(mp.Resource.GroupResource(), name)
	}
	if uid != "" && o.GetUID() != uid {
		return apierrors.NewConflict(mp.Resource.GroupResource(), name, fmt.Errorf("uid precondition"))
	}
	m.deletes++
	delete(m.objects, k)
	return nil
}

// object returns a stored object, or nil.
func (m *fakeMember) object(kind, ns, name string) *unstructured.Unstructured {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, o := range m.objects {
		if o.GetKind() == kind && o.GetNamespace() == ns && o.GetName() == name {
			return o.DeepCopy()
		}
	}
	return nil
}

func (m *fakeMember) put(o *unstructured.Unstructured) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.nextUID++
	o.SetUID(types.UID(fmt.Sprint(m.nextUID)))
	m.objects[objKey(m.kinds[o.GroupVersionKind()], o.GetNamespace(), o.GetName())] = o
}

func (m *fakeMember) counts() (applies, deletes int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.applies, m.deletes
}

func (m *fakeMember) setApplyErr(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.applyErr = err
}
