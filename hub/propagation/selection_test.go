package propagation

import (
	"fmt"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
)

func names(ts []target) string {
	var out []string
	for _, t := range ts {
		n := t.name
		if t.cluster == nil {
			n += "(unregistered)"
		}
		out = append(out, n)
	}
	return fmt.Sprint(out)
}

func TestPlace(t *testing.T) {
	deleting := cluster("gone", map[string]string{"env": "prod"}, true)
	now := metav1.Now()
	deleting.DeletionTimestamp = &now
	clusters := []v1alpha1.Cluster{
		cluster("c", map[string]string{"env": "prod", "region": "eu"}, true),
		cluster("a", map[string]string{"env": "prod", "region": "us"}, true),
		cluster("b", map[string]string{"env": "dev"}, false),
		deleting,
	}
	tests := []struct {
		name string
		sel  v1alpha1.ClusterSelection
		want string
	}{
		{"nothing selects nothing", v1alpha1.ClusterSelection{}, "[]"},
		{"names", v1alpha1.ClusterSelection{Clusters: []string{"b", "a"}}, "[a b]"},
		{"selector", v1alpha1.ClusterSelection{ClusterSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"env": "prod"}}}, "[a c]"},
		{"names ∪ selector, once each", v1alpha1.ClusterSelection{
			Clusters:        []string{"b", "c"},
			ClusterSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"env": "prod"}},
		}, "[a b c]"},
		{"empty selector selects all", v1alpha1.ClusterSelection{ClusterSelector: &metav1.LabelSelector{}}, "[a b c]"},
		{"expressions", v1alpha1.ClusterSelection{ClusterSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "region", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"us"}},
			{Key: "region", Operator: metav1.LabelSelectorOpExists},
		}}}, "[c]"},
		{"a named cluster not registered is a target", v1alpha1.ClusterSelection{Clusters: []string{"x", "a"}}, "[a x(unregistered)]"},
		{"a Cluster being deleted is not", v1alpha1.ClusterSelection{Clusters: []string{"gone"}}, "[gone(unregistered)]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sel, err := compileSelection(tc.sel)
			if err != nil {
				t.Fatal(err)
			}
			if got := names(place(sel, clusters)); got != tc.want {
				t.Fatalf("place = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestDivideTargets(t *testing.T) {
	a := cluster("a", map[string]string{"size": "big"}, true)
	b := cluster("b", nil, true)
	c := cluster("c", nil, true)
	notReady := cluster("n", map[string]string{"size": "big"}, false)
	targets := []target{{name: "a", cluster: &a}, {name: "b", cluster: &b}, {name: "c", cluster: &c}, {name: "n", cluster: &notReady}, {name: "u"}}
	weights := func(ws ...v1alpha1.ClusterWeight) []weight {
		var out []weight
		for _, w := range ws {
			sel, err := compileSelection(w.ClusterSelection)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, weight{sel: sel, weight: w.Weight, min: w.Min, max: w.Max})
		}
		return out
	}
	tests := []struct {
		name    string
		div     *v1alpha1.ReplicaDivision
		weights []weight
		want    string
	}{
		{"no division", nil, nil, "map[]"},
		{"default weights, not-ready and unregistered get 0", &v1alpha1.ReplicaDivision{Replicas: 10}, nil, "map[a:4 b:3 c:3 n:0 u:0]"},
		{"2:1:1 by selector", &v1alpha1.ReplicaDivision{Replicas: 10}, weights(
			v1alpha1.ClusterWeight{ClusterSelection: v1alpha1.ClusterSelection{ClusterSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"size": "big"}}}, Weight: 2},
		), "map[a:5 b:3 c:2 n:0 u:0]"},
		{"first matching weight wins", &v1alpha1.ReplicaDivision{Replicas: 10}, weights(
			v1alpha1.ClusterWeight{ClusterSelection: v1alpha1.ClusterSelection{Clusters: []string{"c"}}, Weight: 0, Min: i32(1)},
			v1alpha1.ClusterWeight{ClusterSelection: v1alpha1.ClusterSelection{ClusterSelector: &metav1.LabelSelector{}}, Weight: 1, Max: i32(3)},
		), "map[a:3 b:3 c:4 n:0 u:0]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := divide(tc.div, tc.weights, targets)
			if tc.div == nil {
				if got != nil {
					t.Fatalf("divide = %v, want nil", got)
				}
				return
			}
			if fmt.Sprint(got) != tc.want {
				t.Fatalf("divide = %v, want %s", got, tc.want)
			}
		})
	}
}
