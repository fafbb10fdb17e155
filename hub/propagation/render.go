package propagation

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
)

// errInvalidSpec marks a Propagation whose spec cannot be acted on: retrying
// does not help until the spec changes.
var errInvalidSpec = errors.New("invalid spec")

// plan is a Propagation's spec parsed and checked once per reconcile.
type plan struct {
	key        types.NamespacedName
	generation int64
	template   map[string]any
	gvk        schema.GroupVersionKind
	placement  selection
	overrides  []override
	weights    []weight
	division   *v1alpha1.ReplicaDivision
}

type override struct {
	sel   selection
	patch jsonpatch.Patch
}

// compile parses p's spec. Its errors wrap errInvalidSpec.
func compile(p *v1alpha1.Propagation) (*plan, error) {
	pl := &plan{
		key:        types.NamespacedName{Namespace: p.Namespace, Name: p.Name},
		generation: p.Generation,
		division:   p.Spec.ReplicaDivision,
	}
	var err error
	if pl.template, pl.gvk, err = parseTemplate(p.Spec.Template); err != nil {
		return nil, fmt.Errorf("%w: template: %w", errInvalidSpec, err)
	}
	if pl.placement, err = compileSelection(p.Spec.Placement.ClusterSelection); err != nil {
		return nil, fmt.Errorf("%w: placement: %w", errInvalidSpec, err)
	}
	for i, o := range p.Spec.Overrides {
		sel, err := compileSelection(o.ClusterSelection)
		if err != nil {
			return nil, fmt.Errorf("%w: overrides[%d]: %w", errInvalidSpec, i, err)
		}
		raw, err := json.Marshal(o.Patches)
		if err != nil {
			return nil, fmt.Errorf("%w: overrides[%d]: %w", errInvalidSpec, i, err)
		}
		patch, err := jsonpatch.DecodePatch(raw)
		if err != nil {
			return nil, fmt.Errorf("%w: overrides[%d]: %w", errInvalidSpec, i, err)
		}
		pl.overrides = append(pl.overrides, override{sel: sel, patch: patch})
	}
	if d := p.Spec.ReplicaDivision; d != nil {
		for i, w := range d.Weights {
			sel, err := compileSelection(w.ClusterSelection)
			if err != nil {
				return nil, fmt.Errorf("%w: replicaDivision.weights[%d]: %w", errInvalidSpec, i, err)
			}
			pl.weights = append(pl.weights, weight{sel: sel, weight: w.Weight, min: w.Min, max: w.Max})
		}
	}
	return pl, nil
}

// parseTemplate decodes the template and checks what server-side apply
// needs: apiVersion, kind and metadata.name.
func parseTemplate(raw runtime.RawExtension) (map[string]any, schema.GroupVersionKind, error) {
	if len(raw.Raw) == 0 {
		return nil, schema.GroupVersionKind{}, errors.New("empty")
	}
	var m map[string]any
	if err := json.Unmarshal(raw.Raw, &m); err != nil {
		return nil, schema.GroupVersionKind{}, err
	}
	u := unstructured.Unstructured{Object: m}
	gvk := u.GroupVersionKind()
	switch {
	case gvk.Kind == "" || gvk.Version == "":
		return nil, gvk, errors.New("apiVersion and kind are required")
	case u.GetName() == "":
		return nil, gvk, errors.New("metadata.name is required (generateName cannot be applied)")
	}
	return m, gvk, nil
}

// serverFields are metadata a template copied from a live object may carry
// that must not be applied.
var serverFields = []string{"uid", "resourceVersion", "generation", "creationTimestamp",
	"deletionTimestamp", "deletionGracePeriodSeconds", "managedFields", "selfLink"}

// render computes the object for cluster t: the template, the namespace
// defaulted (namespaced kinds) or removed (cluster-scoped ones), the
// overrides selecting t in order, the cluster's replicas (when divided),
// and the labels and annotations naming the Propagation and generation.
func (pl *plan) render(t target, namespaced bool, replicas *int32) (*unstructured.Unstructured, error) {
	obj := &unstructured.Unstructured{Object: runtime.DeepCopyJSON(pl.template)}
	for _, f := range serverFields {
		unstructured.RemoveNestedField(obj.Object, "metadata", f)
	}
	unstructured.RemoveNestedField(obj.Object, "status")
	if !namespaced {
		unstructured.RemoveNestedField(obj.Object, "metadata", "namespace")
	} else if obj.GetNamespace() == "" {
		obj.SetNamespace(pl.key.Namespace)
	}
	for i, o := range pl.overrides {
		if !o.sel.matches(t.name, t.labels()) {
			continue
		}
		doc, err := json.Marshal(obj.Object)
		if err != nil {
			return nil, err
		}
		if doc, err = o.patch.Apply(doc); err != nil {
			return nil, fmt.Errorf("overrides[%d]: %w", i, err)
		}
		m := map[string]any{}
		if err := json.Unmarshal(doc, &m); err != nil {
			return nil, fmt.Errorf("overrides[%d]: %w", i, err)
		}
		obj.Object = m
	}
	if replicas != nil {
		if err := unstructured.SetNestedField(obj.Object, int64(*replicas), "spec", "replicas"); err != nil {
			return nil, fmt.Errorf("set spec.replicas: %w", err)
		}
	}
	if obj.GetAPIVersion() == "" || obj.GetKind() == "" || obj.GetName() == "" {
		return nil, errors.New("overrides removed apiVersion, kind or metadata.name")
	}
	lbls := obj.GetLabels()
	if lbls == nil {
		lbls = map[string]string{}
	}
	lbls[LabelPropagation] = labelValue(pl.key)
	obj.SetLabels(lbls)
	ann := obj.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	ann[AnnotationPropagation] = pl.key.String()
	ann[AnnotationGeneration] = strconv.FormatInt(pl.generation, 10)
	obj.SetAnnotations(ann)
	return obj, nil
}

// withoutOverrides is pl with no overrides: the template's own identity.
func (pl *plan) withoutOverrides() *plan {
	c := *pl
	c.overrides = nil
	return &c
}

// labelValue is key as a label value: "<namespace>.<name>" (unambiguous,
// namespaces have no dots), or its first 52 characters and a hash when that
// exceeds the 63 characters a label value may hold.
func labelValue(key types.NamespacedName) string {
	v := key.Namespace + "." + key.Name
	if len(v) <= 63 {
		return v
	}
	sum := sha256.Sum256([]byte(v))
	return v[:52] + "-" + hex.EncodeToString(sum[:5])
}

// owned says whether obj is the copy of the Propagation key.
func owned(obj *unstructured.Unstructured, key types.NamespacedName) bool {
	return obj.GetAnnotations()[AnnotationPropagation] == key.String() &&
		obj.GetLabels()[LabelPropagation] == labelValue(key)
}

// digest identifies a rendered object, to skip applying what was applied a
// moment ago.
func digest(obj *unstructured.Unstructured) ([sha256.Size]byte, error) {
	b, err := json.Marshal(obj.Object) // map keys are sorted
	if err != nil {
		return [sha256.Size]byte{}, err
	}
	return sha256.Sum256(b), nil
}
