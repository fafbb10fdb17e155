package propagation

import (
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
)

// Reasons of the Ready condition.
const (
	// ReasonApplied: every placed cluster has the current generation.
	ReasonApplied = "Applied"
	// ReasonPending: some placed clusters wait (not connected, not Ready,
	// not registered) and none failed.
	ReasonPending = "Pending"
	// ReasonFailed: some placed cluster refused or could not be written.
	ReasonFailed = "Failed"
	// ReasonNoClusters: the placement selects no cluster.
	ReasonNoClusters = "NoClusters"
	// ReasonInvalidSpec: the spec cannot be acted on (bad template,
	// selector or patch); nothing is written until it changes.
	ReasonInvalidSpec = "InvalidSpec"
	// ReasonDeleting: the Propagation is being deleted and copies remain.
	ReasonDeleting = "Deleting"
)

// maxListed bounds how many clusters the Ready message names.
const maxListed = 3

// summarize computes p's status from the per-cluster entries (placed
// clusters and clusters a copy is still to be removed from). A cluster
// counts as ready when it is placed and Applied at p's generation; Ready is
// True when every placed cluster is, and at least one is placed.
func summarize(p *v1alpha1.Propagation, entries []v1alpha1.ClusterPropagationStatus, placed map[string]bool) v1alpha1.PropagationStatus {
	entries = slices.Clone(entries)
	slices.SortFunc(entries, func(a, b v1alpha1.ClusterPropagationStatus) int { return strings.Compare(a.Cluster, b.Cluster) })
	st := v1alpha1.PropagationStatus{
		ObservedGeneration: p.Generation,
		Conditions:         slices.Clone(p.Status.Conditions),
		Clusters:           entries,
		TotalClusters:      int32(len(placed)),
	}
	var failed, waiting []v1alpha1.ClusterPropagationStatus
	for _, e := range entries {
		if !placed[e.Cluster] {
			continue
		}
		switch {
		case e.State == v1alpha1.StateApplied && e.ObservedGeneration == p.Generation:
			st.ReadyClusters++
		case e.State == v1alpha1.StateFailed:
			failed = append(failed, e)
		default:
			waiting = append(waiting, e)
		}
	}
	cond := metav1.Condition{Type: v1alpha1.PropagationReady, ObservedGeneration: p.Generation}
	summary := fmt.Sprintf("%d of %d clusters applied", st.ReadyClusters, st.TotalClusters)
	switch {
	case st.TotalClusters == 0:
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, ReasonNoClusters, "the placement selects no cluster"
	case len(failed) > 0:
		cond.Status, cond.Reason = metav1.ConditionFalse, ReasonFailed
		cond.Message = summary + "; failed: " + list(failed)
		if len(waiting) > 0 {
			cond.Message += "; pending: " + list(waiting)
		}
	case len(waiting) > 0:
		cond.Status, cond.Reason = metav1.ConditionFalse, ReasonPending
		cond.Message = summary + "; pending: " + list(waiting)
	default:
		cond.Status, cond.Reason, cond.Message = metav1.ConditionTrue, ReasonApplied, summary
	}
	meta.SetStatusCondition(&st.Conditions, cond)
	return st
}

// invalidStatus keeps p's per-cluster entries and says why nothing is done.
func invalidStatus(p *v1alpha1.Propagation, err error) v1alpha1.PropagationStatus {
	st := *p.Status.DeepCopy()
	st.ObservedGeneration = p.Generation
	st.ReadyClusters = 0
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{
		Type: v1alpha1.PropagationReady, Status: metav1.ConditionFalse, ObservedGeneration: p.Generation,
		Reason: ReasonInvalidSpec, Message: err.Error(),
	})
	return st
}

// deletingStatus reports the copies a Propagation being deleted waits for.
func deletingStatus(p *v1alpha1.Propagation, entries []v1alpha1.ClusterPropagationStatus) v1alpha1.PropagationStatus {
	entries = slices.Clone(entries)
	slices.SortFunc(entries, func(a, b v1alpha1.ClusterPropagationStatus) int { return strings.Compare(a.Cluster, b.Cluster) })
	st := *p.Status.DeepCopy()
	st.Clusters = entries
	st.ReadyClusters = 0
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{
		Type: v1alpha1.PropagationReady, Status: metav1.ConditionFalse, ObservedGeneration: p.Generation,
		Reason: ReasonDeleting, Message: fmt.Sprintf("deleting copies in %d clusters: %s", len(entries), list(entries)),
	})
	return st
}

// list names up to maxListed clusters with their messages.
func list(es []v1alpha1.ClusterPropagationStatus) string {
	var b strings.Builder
	for i, e := range es {
		if i == maxListed {
			fmt.Fprintf(&b, "; and %d more", len(es)-maxListed)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(e.Cluster)
		if e.Message != "" {
			b.WriteString(" (" + truncate(e.Message, 200) + ")")
		}
	}
	return b.String()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// statusEqual compares statuses ignoring condition timestamps, which
// SetStatusCondition keeps while the status does not change.
func statusEqual(a, b v1alpha1.PropagationStatus) bool {
	return equality.Semantic.DeepEqual(a, b)
}

// entryFor returns cluster's entry in st, or nil.
func entryFor(st *v1alpha1.PropagationStatus, cluster string) *v1alpha1.ClusterPropagationStatus {
	for i := range st.Clusters {
		if st.Clusters[i].Cluster == cluster {
			return &st.Clusters[i]
		}
	}
	return nil
}

// mayHoldCopy says whether a cluster with this status entry may hold a
// copy: some generation was applied there. (A cluster that is connected
// is always checked; this decides whether an unreachable one must be
// waited for.)
func mayHoldCopy(e *v1alpha1.ClusterPropagationStatus) bool {
	return e != nil && e.ObservedGeneration > 0
}
