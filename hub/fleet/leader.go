package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
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

// Leadership follows whether this replica leads (the host manager's
// leader election) and labels its Pod accordingly.
type Leadership struct {
	host    *Host
	pod     string // empty outside a Pod: nothing to label
	replica string
	log     hclog.Logger
	standby atomic.Bool
}

// NewLeadership starts as a standby; Run makes it lead once elected.
func NewLeadership(host *Host, pod, replica string, log hclog.Logger) *Leadership {
	l := &Leadership{host: host, pod: pod, replica: replica, log: log}
	l.standby.Store(true)
	return l
}

// Standby says whether another replica leads (or none has been elected).
func (l *Leadership) Standby() bool { return l.standby.Load() }

// Run waits until the manager (started by the caller) is elected, then
// leads: it labels this Pod, and removes the label when ctx ends.
func (l *Leadership) Run(ctx context.Context) {
	// A label left by an earlier run of this Pod that lost the lease must
	// go before the Service sends traffic here again.
	if err := l.label(ctx, false); err != nil {
		l.log.Warn("cannot clear the leader label", "error", err)
	}
	select {
	case <-l.host.Manager.Elected():
	case <-ctx.Done():
		return
	}
	l.standby.Store(false)
	l.log.Info("leading: serving agents and callers", "replica", l.replica)
	if err := l.label(ctx, true); err != nil {
		l.log.Error("cannot label this pod as leader; the Service will not route here", "error", err)
	}
	<-ctx.Done()
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = l.label(cctx, false)
}

// label adds (leading) or removes the label on this Pod.
func (l *Leadership) label(ctx context.Context, leading bool) error {
	if l.pod == "" {
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
	p.Namespace, p.Name = l.host.Namespace, l.pod
	if err := l.host.Direct.Patch(ctx, p, client.RawPatch(types.MergePatchType, patch)); err != nil {
		return fmt.Errorf("labelling pod %s/%s %s=%v: %w", p.Namespace, p.Name, LeaderLabel, leading, err)
	}
	return nil
}
