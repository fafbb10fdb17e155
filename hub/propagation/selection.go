package propagation

import (
	"fmt"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
)

// selection is a compiled ClusterSelection: a cluster matches when it is
// named or (with a selector) its labels match. No names and no selector
// match nothing; an empty selector ({}) matches every cluster.
type selection struct {
	names    map[string]bool
	selector labels.Selector // nil: none
}

func compileSelection(s v1alpha1.ClusterSelection) (selection, error) {
	sel := selection{names: make(map[string]bool, len(s.Clusters))}
	for _, n := range s.Clusters {
		sel.names[n] = true
	}
	if s.ClusterSelector != nil {
		ls, err := metav1.LabelSelectorAsSelector(s.ClusterSelector)
		if err != nil {
			return selection{}, fmt.Errorf("clusterSelector: %w", err)
		}
		sel.selector = ls
	}
	return sel, nil
}

func (s selection) matches(name string, lbls map[string]string) bool {
	return s.names[name] || (s.selector != nil && s.selector.Matches(labels.Set(lbls)))
}

// target is one cluster a Propagation places its object on.
type target struct {
	name string
	// cluster is the Cluster object; nil when the placement names a
	// cluster that is not registered (yet).
	cluster *v1alpha1.Cluster
}

func (t target) labels() map[string]string {
	if t.cluster == nil {
		return nil
	}
	return t.cluster.Labels
}

// ready says whether the cluster's Ready condition is True: only such
// clusters count in a replica division.
func (t target) ready() bool {
	return t.cluster != nil && clusterReady(t.cluster)
}

func clusterReady(c *v1alpha1.Cluster) bool {
	for _, cond := range c.Status.Conditions {
		if cond.Type == v1alpha1.ClusterReady {
			return cond.Status == metav1.ConditionTrue
		}
	}
	return false
}

// place resolves the placement against the registered clusters: the named
// ones (registered or not) and the registered ones the selector matches,
// sorted by name. A Cluster being deleted is no longer a target.
func place(sel selection, clusters []v1alpha1.Cluster) []target {
	byName := make(map[string]*v1alpha1.Cluster, len(clusters))
	var out []target
	for i := range clusters {
		c := &clusters[i]
		if c.DeletionTimestamp != nil {
			continue
		}
		byName[c.Name] = c
		if sel.matches(c.Name, c.Labels) {
			out = append(out, target{name: c.Name, cluster: c})
		}
	}
	for n := range sel.names {
		if byName[n] == nil {
			out = append(out, target{name: n})
		}
	}
	slices.SortFunc(out, func(a, b target) int { return strings.Compare(a.name, b.name) })
	return out
}

// weight is a compiled ClusterWeight.
type weight struct {
	sel      selection
	weight   int32
	min, max *int32
}

// divide returns each target's replicas under the division, or nil without
// one. The first weight entry selecting a cluster sets its weight and
// bounds; clusters no entry selects weigh 1. Targets that are not Ready get
// 0 and are left out of the division.
func divide(d *v1alpha1.ReplicaDivision, weights []weight, targets []target) map[string]int32 {
	if d == nil {
		return nil
	}
	var shares []Share
	for _, t := range targets {
		if !t.ready() {
			continue
		}
		s := Share{Cluster: t.name, Weight: 1}
		for _, w := range weights {
			if w.sel.matches(t.name, t.labels()) {
				s.Weight = w.weight
				if w.min != nil {
					s.Min = *w.min
				}
				s.Max = w.max
				break
			}
		}
		shares = append(shares, s)
	}
	out := Divide(d.Replicas, shares)
	for _, t := range targets {
		if _, ok := out[t.name]; !ok {
			out[t.name] = 0
		}
	}
	return out
}
