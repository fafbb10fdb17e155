package hub

import (
	"context"
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// LeaderLabel marks the hub Pod that leads. The Service selects it, so
// agents and callers reach only the leader while standbys stay Ready for
// rolling updates and disruption budgets. (A readiness-gated standby would
// stall every rollout: the new Pod could never become Ready while the old
// leader holds the lease.)
const LeaderLabel = "backhaul.io/leader"

// setLeaderLabel adds (leading) or removes the label on Pod ns/pod. It is a
// no-op outside a Pod (pod empty).
func setLeaderLabel(ctx context.Context, c client.Client, ns, pod string, leading bool) error {
	if pod == "" {
		return nil
	}
	var val any // JSON null removes the label
	if leading {
		val = "true"
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]any{LeaderLabel: val}}})
	if err != nil {
		return err
	}
	p := &corev1.Pod{}
	p.Namespace, p.Name = ns, pod
	if err := c.Patch(ctx, p, client.RawPatch(types.MergePatchType, patch)); err != nil {
		return fmt.Errorf("labelling pod %s/%s %s=%v: %w", ns, pod, LeaderLabel, leading, err)
	}
	return nil
}
