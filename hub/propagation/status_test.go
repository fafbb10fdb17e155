package propagation

import (
	"errors"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
)

func entry(cluster, state string, gen int64, msg string) v1alpha1.ClusterPropagationStatus {
	return v1alpha1.ClusterPropagationStatus{Cluster: cluster, State: state, ObservedGeneration: gen, Message: msg}
}

func TestSummarize(t *testing.T) {
	tests := []struct {
		name        string
		entries     []v1alpha1.ClusterPropagationStatus
		placed      []string
		wantReady   int32
		wantStatus  metav1.ConditionStatus
		wantReason  string
		wantMessage string
	}{
		{
			name:    "all applied at the current generation",
			entries: []v1alpha1.ClusterPropagationStatus{entry("b", "Applied", 3, ""), entry("a", "Applied", 3, "")},
			placed:  []string{"a", "b"}, wantReady: 2,
			wantStatus: metav1.ConditionTrue, wantReason: ReasonApplied, wantMessage: "2 of 2 clusters applied",
		},
		{
			name:    "an older generation is not ready",
			entries: []v1alpha1.ClusterPropagationStatus{entry("a", "Applied", 3, ""), entry("b", "Pending", 2, "cluster b is not connected")},
			placed:  []string{"a", "b"}, wantReady: 1,
			wantStatus: metav1.ConditionFalse, wantReason: ReasonPending, wantMessage: "1 of 2 clusters applied; pending: b (cluster b is not connected)",
		},
		{
			name: "failed wins over pending",
			entries: []v1alpha1.ClusterPropagationStatus{
				entry("a", "Failed", 0, "denied"), entry("b", "Pending", 0, "offline"), entry("c", "Applied", 3, ""),
			},
			placed: []string{"a", "b", "c"}, wantReady: 1,
			wantStatus: metav1.ConditionFalse, wantReason: ReasonFailed, wantMessage: "1 of 3 clusters applied; failed: a (denied); pending: b (offline)",
		},
		{
			name:       "nothing placed",
			placed:     nil,
			wantStatus: metav1.ConditionFalse, wantReason: ReasonNoClusters, wantMessage: "the placement selects no cluster",
		},
		{
			name:    "a cluster still to be cleaned up is listed but not counted",
			entries: []v1alpha1.ClusterPropagationStatus{entry("a", "Applied", 3, ""), entry("old", "Pending", 2, "cleanup waits")},
			placed:  []string{"a"}, wantReady: 1,
			wantStatus: metav1.ConditionTrue, wantReason: ReasonApplied, wantMessage: "1 of 1 clusters applied",
		},
		{
			name: "long lists are cut",
			entries: []v1alpha1.ClusterPropagationStatus{
				entry("a", "Pending", 0, ""), entry("b", "Pending", 0, ""), entry("c", "Pending", 0, ""), entry("d", "Pending", 0, ""), entry("e", "Pending", 0, ""),
			},
			placed:     []string{"a", "b", "c", "d", "e"},
			wantStatus: metav1.ConditionFalse, wantReason: ReasonPending, wantMessage: "0 of 5 clusters applied; pending: a; b; c; and 2 more",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := &v1alpha1.Propagation{ObjectMeta: metav1.ObjectMeta{Generation: 3}}
			placed := map[string]bool{}
			for _, n := range tc.placed {
				placed[n] = true
			}
			st := summarize(p, tc.entries, placed)
			if st.ReadyClusters != tc.wantReady || st.TotalClusters != int32(len(tc.placed)) || st.ObservedGeneration != 3 {
				t.Errorf("ready/total/generation = %d/%d/%d, want %d/%d/3", st.ReadyClusters, st.TotalClusters, st.ObservedGeneration, tc.wantReady, len(tc.placed))
			}
			for i := 1; i < len(st.Clusters); i++ {
				if st.Clusters[i-1].Cluster >= st.Clusters[i].Cluster {
					t.Errorf("clusters not sorted: %v", st.Clusters)
				}
			}
			c := meta.FindStatusCondition(st.Conditions, v1alpha1.PropagationReady)
			if c == nil {
				t.Fatal("no Ready condition")
			}
			if c.Status != tc.wantStatus || c.Reason != tc.wantReason || c.Message != tc.wantMessage || c.ObservedGeneration != 3 {
				t.Errorf("Ready = %s/%s/%q (gen %d), want %s/%s/%q", c.Status, c.Reason, c.Message, c.ObservedGeneration, tc.wantStatus, tc.wantReason, tc.wantMessage)
			}
		})
	}
}

func TestSummarizeKeepsTransitionTime(t *testing.T) {
	then := metav1.NewTime(time.Now().Add(-time.Hour).Truncate(time.Second))
	p := &v1alpha1.Propagation{ObjectMeta: metav1.ObjectMeta{Generation: 1}}
	p.Status.Conditions = []metav1.Condition{{Type: v1alpha1.PropagationReady, Status: metav1.ConditionTrue, Reason: ReasonApplied, LastTransitionTime: then}}
	st := summarize(p, []v1alpha1.ClusterPropagationStatus{entry("a", "Applied", 1, "")}, map[string]bool{"a": true})
	if c := meta.FindStatusCondition(st.Conditions, v1alpha1.PropagationReady); !c.LastTransitionTime.Equal(&then) {
		t.Errorf("transition time %v, want %v", c.LastTransitionTime, then)
	}
	p.Status = st
	if again := summarize(p, []v1alpha1.ClusterPropagationStatus{entry("a", "Applied", 1, "")}, map[string]bool{"a": true}); !statusEqual(again, st) {
		t.Error("an unchanged status compares unequal: every reconcile would write it")
	}
}

func TestInvalidAndDeletingStatus(t *testing.T) {
	p := &v1alpha1.Propagation{ObjectMeta: metav1.ObjectMeta{Generation: 2}}
	p.Status.Clusters = []v1alpha1.ClusterPropagationStatus{entry("a", "Applied", 1, "")}
	st := invalidStatus(p, errors.New("bad template"))
	if c := meta.FindStatusCondition(st.Conditions, v1alpha1.PropagationReady); c.Reason != ReasonInvalidSpec || c.Message != "bad template" {
		t.Errorf("invalid: %+v", c)
	}
	if len(st.Clusters) != 1 || st.ObservedGeneration != 2 {
		t.Errorf("invalid status dropped the clusters or the generation: %+v", st)
	}
	st = deletingStatus(p, []v1alpha1.ClusterPropagationStatus{entry("b", "Pending", 1, "cluster b is not connected")})
	c := meta.FindStatusCondition(st.Conditions, v1alpha1.PropagationReady)
	if c.Reason != ReasonDeleting || !strings.Contains(c.Message, "b (cluster b is not connected)") {
		t.Errorf("deleting: %+v", c)
	}
}
