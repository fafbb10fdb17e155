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

// MaxStatusClusters bounds how many clusters status.clusters lists (the
// CRD's MaxItems): status stays small however large the fleet.
const MaxStatusClusters = 100

// summarize computes p's status from the per-cluster entries (placed
// clusters and clusters a copy is still to be removed from). A cluster
// counts as ready when it is placed and Applied at p's generation; Ready is
// True when every placed cluster is, and at least one is placed. Only the
// clusters that are not ready are listed, failed first, at most
// MaxStatusClusters.
func summarize(p *v1alpha1.Propagation, entries []v1alpha1.ClusterPropagationStatus, placed map[string]bool) v1alpha1.PropagationStatus {
	st := v1alpha1.PropagationStatus{
		ObservedGeneration: p.Generation,
		Conditions:         slices.Clone(p.Status.Conditions),
		TotalClusters:      int32(len(placed)),
		Objects:            slices.Clone(p.Status.Objects),
		StaleObjects:       slices.Clone(p.Status.StaleObjects),
	}
	var failed, waiting, leaving []v1alpha1.ClusterPropagationStatus
	for _, e := range entries {
		switch {
		case !placed[e.Cluster]:
			leaving = append(leaving, e)
		case e.State == v1alpha1.StateApplied && e.ObservedGeneration == p.Generation:
			st.ReadyClusters++
		case e.State == v1alpha1.StateFailed:
			failed = append(failed, e)
		default:
			waiting = append(waiting, e)
		}
	}
	st.FailedClusters, st.PendingClusters = int32(len(failed)), int32(len(waiting))
	byName := func(a, b v1alpha1.ClusterPropagationStatus) int { return strings.Compare(a.Cluster, b.Cluster) }
	slices.SortFunc(failed, byName)
	slices.SortFunc(waiting, byName)
	slices.SortFunc(leaving, byName)
	st.Clusters, st.UnlistedClusters = bounded(failed, waiting, leaving)
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

// bounded concatenates groups, in order, up to MaxStatusClusters entries,
// and counts what it left out.
func bounded(groups ...[]v1alpha1.ClusterPropagationStatus) ([]v1alpha1.ClusterPropagationStatus, int32) {
	var out []v1alpha1.ClusterPropagationStatus
	var left int32
	for _, g := range groups {
		n := min(len(g), MaxStatusClusters-len(out))
		out = append(out, g[:n]...)
		left += int32(len(g) - n)
	}
	return out, left
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
	st.Clusters, st.UnlistedClusters = bounded(entries)
	st.ReadyClusters, st.PendingClusters, st.FailedClusters = 0, 0, 0
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

// mayHoldCopy says whether a cluster that st lists as e (nil: not listed)
// may hold a copy, as far as status tells. (A cluster that is connected is
// always checked; this decides whether an unreachable one must be waited
// for.) Once a Propagation is being deleted, status lists every cluster
// still waited for, so one it does not list holds nothing; before, status
// lists only clusters that are not Applied, so one it does not list may
// hold a copy. A listed one does once some generation was applied there.
func mayHoldCopy(st *v1alpha1.PropagationStatus, e *v1alpha1.ClusterPropagationStatus) bool {
	if e != nil {
		return e.ObservedGeneration > 0
	}
	c := meta.FindStatusCondition(st.Conditions, v1alpha1.PropagationReady)
	deleting := c != nil && c.Reason == ReasonDeleting && st.UnlistedClusters == 0
	return !deleting
}
