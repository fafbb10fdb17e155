package fleet

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
)

// StatusConfig is what the status updater needs.
type StatusConfig struct {
	Client client.Client
	// Clusters lists the registered clusters.
	Clusters *Clusters
	// Replicas is the session directory's view: every live replica (this
	// one included) with what it holds and measured.
	Replicas func() []Replica
	// Resync is how often the directory is looked at for changes.
	Resync time.Duration
	// Heartbeat: status is written at least this often while connected,
	// and at once on any change.
	Heartbeat time.Duration
	// Tunnel is how status.tunnel is kept from what the replicas measured.
	Tunnel TunnelHealthConfig
	// Metrics, when set, export the fleet's health as written.
	Metrics *Metrics
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	Log hclog.Logger
}

// StatusUpdater keeps each Cluster's status true to what the replicas
// publish in the session directory: TunnelConnected when any replica holds
// a session, Ready from the member's /readyz as the replicas probed it in
// the background, the agent's and the member's versions, which replicas
// hold it, and a heartbeat. It sends nothing through the tunnels itself,
// so its cost does not grow with the fleet's round trips. A lost tunnel
// makes a cluster not Ready; it never removes it. Only the leader runs it.
type StatusUpdater struct {
	cfg StatusConfig

	mu   sync.Mutex
	seen map[string]observation
	// figures are the round trip, streams, bytes and skew last written
	// per cluster, and when: they are written at most every
	// Tunnel.WriteInterval.
	figures map[string]writtenFigures
}

type writtenFigures struct {
	at time.Time
	t  *v1alpha1.TunnelStatus
}

// NewStatusUpdater returns the updater; the singleton term starts it.
func NewStatusUpdater(cfg StatusConfig) *StatusUpdater {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Tunnel == (TunnelHealthConfig{}) {
		cfg.Tunnel = DefaultTunnelHealthConfig()
	}
	return &StatusUpdater{cfg: cfg, seen: map[string]observation{}, figures: map[string]writtenFigures{}}
}

// observation is what the directory says of one cluster.
type observation struct {
	replicas          []string
	sessions          int
	agentVersion      string
	ready             bool
	readyMsg          string
	kubeVersion       string
	heartbeat         time.Time
	connectedReplicas string // for the condition message
	// tunnel is the replicas' measurements merged (nil: none reported).
	tunnel *v1alpha1.TunnelStatus
}

// equal compares what is written at once when it changes: everything but
// the tunnel's moving figures, which figuresDue batches.
func (o observation) equal(p observation) bool {
	return slices.Equal(o.replicas, p.replicas) && o.sessions == p.sessions && o.agentVersion == p.agentVersion &&
		o.ready == p.ready && o.readyMsg == p.readyMsg && o.kubeVersion == p.kubeVersion &&
		tunnelEventsEqual(o.tunnel, p.tunnel)
}

// tunnelEventsEqual compares two merged tunnels but for their moving
// figures (figuresEqual compares those). It runs for every cluster at
// every resync, so it compares fields rather than copies.
func tunnelEventsEqual(a, b *v1alpha1.TunnelStatus) bool {
	if a == nil || b == nil {
		return a == b
	}
	return durEqual(a.RTTWindow, b.RTTWindow) && a.Reconnects == b.Reconnects && a.Flapping == b.Flapping &&
		timeEqual(a.ConnectedSince, b.ConnectedSince) && timeEqual(a.CertificateNotAfter, b.CertificateNotAfter) &&
		timeEqual(a.LastDisconnectTime, b.LastDisconnectTime) && a.LastDisconnectReason == b.LastDisconnectReason &&
		timeEqual(a.LastRefusalTime, b.LastRefusalTime) && a.LastRefusalReason == b.LastRefusalReason
}

func timeEqual(a, b *metav1.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(b)
}

// Start writes status until ctx ends.
func (u *StatusUpdater) Start(ctx context.Context) error {
	u.cfg.Metrics.lead(true)
	defer u.cfg.Metrics.lead(false)
	// The workqueue folds repeated events for one cluster into one write.
	queue := workqueue.NewTyped[string]()
	context.AfterFunc(ctx, queue.ShutDown)
	var wg sync.WaitGroup
	for range statusWorkers {
		wg.Go(func() {
			for {
				name, shutdown := queue.Get()
				if shutdown {
					return
				}
				if err := u.update(ctx, name); err != nil && ctx.Err() == nil {
					u.cfg.Log.Warn("cluster status update failed", "cluster", name, "error", err)
				}
				queue.Done(name)
			}
		})
	}
	defer wg.Wait()
	resync := time.NewTicker(u.cfg.Resync)
	defer resync.Stop()
	heartbeat := time.NewTicker(u.cfg.Heartbeat)
	defer heartbeat.Stop()
	all := true
	for {
		for _, c := range u.changed(all) {
			queue.Add(c)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-resync.C:
			all = false
		case <-heartbeat.C:
			all = true
		}
	}
}

// statusWorkers bounds concurrent status writes.
const statusWorkers = 8

// changed reads the directory and returns the clusters whose observation
// changed (all registered clusters when all).
// A cluster whose only change is its moving tunnel figures is returned
// when those are due for a write.
func (u *StatusUpdater) changed(all bool) []string {
	obs := observe(u.cfg.Replicas(), u.cfg.Tunnel)
	names := u.cfg.Clusters.Names()
	u.cfg.Metrics.retain(names)
	now := u.cfg.Now()
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []string
	registered := make(map[string]bool, len(names))
	for _, name := range names {
		registered[name] = true
		prev, had := u.seen[name]
		o := obs[name]
		if all || !had || !prev.equal(o) || u.figuresDueLocked(name, o.tunnel, now) {
			out = append(out, name)
		}
	}
	u.seen = obs
	maps.DeleteFunc(u.figures, func(n string, _ writtenFigures) bool { return !registered[n] })
	return out
}

// figuresDueLocked says whether cluster's moving tunnel figures t differ
// from those last written, long enough ago for another write.
func (u *StatusUpdater) figuresDueLocked(cluster string, t *v1alpha1.TunnelStatus, now time.Time) bool {
	w, ok := u.figures[cluster]
	if !ok || now.Sub(w.at) >= u.cfg.Tunnel.WriteInterval {
		return t != nil && (w.t == nil || !figuresEqual(t, w.t))
	}
	return false
}

// observe folds the replicas' entries into one observation per cluster.
func observe(replicas []Replica, tc TunnelHealthConfig) map[string]observation {
	out := map[string]observation{}
	reports := map[string][]v1alpha1.ReplicaTunnel{}
	for _, r := range replicas {
		for name, t := range r.Tunnels {
			reports[name] = append(reports[name], t)
		}
	}
	for name, rs := range reports {
		o := out[name]
		o.tunnel = mergeTunnel(rs, tc)
		out[name] = o
	}
	for _, r := range replicas {
		for _, name := range slices.Sorted(maps.Keys(r.Clusters)) {
			h := r.Clusters[name]
			o := out[name]
			o.replicas = append(o.replicas, r.Name)
			o.sessions += int(h.Sessions)
			if o.agentVersion == "" {
				o.agentVersion = h.AgentVersion
			}
			if h.KubernetesVersion != "" {
				o.kubeVersion = h.KubernetesVersion
			}
			// Ready when any replica reached the member.
			if h.Ready && !o.ready {
				o.ready, o.readyMsg, o.heartbeat = true, h.ReadyMessage, r.Renewed
			} else if !o.ready && o.readyMsg == "" {
				o.readyMsg = h.ReadyMessage
			}
			out[name] = o
		}
	}
	for name, o := range out {
		o.connectedReplicas = strings.Join(o.replicas, ", ")
		out[name] = o
	}
	return out
}

func (u *StatusUpdater) observation(cluster string) observation {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.seen[cluster]
}

func (u *StatusUpdater) update(ctx context.Context, name string) error {
	var c v1alpha1.Cluster
	if err := u.cfg.Client.Get(ctx, types.NamespacedName{Name: name}, &c); err != nil {
		return client.IgnoreNotFound(err)
	}
	o := u.observation(name)
	orig := c.DeepCopy()
	st := &c.Status
	now := metav1.Now()
	conn := metav1.Condition{Type: v1alpha1.ClusterTunnelConnected, Status: metav1.ConditionFalse, Reason: "NoAgent", Message: "no agent is connected to any hub replica", ObservedGeneration: c.Generation}
	ready := metav1.Condition{Type: v1alpha1.ClusterReady, Status: metav1.ConditionFalse, Reason: "TunnelDown", Message: "no agent is connected to any hub replica", ObservedGeneration: c.Generation}
	st.Agents = int32(o.sessions)
	st.HubReplicas = o.replicas
	if len(o.replicas) > 0 {
		conn.Status, conn.Reason, conn.Message = metav1.ConditionTrue, "AgentConnected", fmt.Sprintf("%d agent session(s) on hub replica(s) %s", o.sessions, o.connectedReplicas)
		st.AgentVersion = o.agentVersion
		ready.Reason, ready.Message = "ReadyzFailed", o.readyMsg
		if o.readyMsg == "" {
			ready.Reason, ready.Message = "NotProbedYet", "the member has not been probed through the tunnel yet"
		}
		if o.ready {
			ready.Status, ready.Reason, ready.Message = metav1.ConditionTrue, "ReadyzOK", "the member's /readyz answered ok through the tunnel"
			hb := metav1.NewTime(o.heartbeat)
			st.LastHeartbeatTime = &hb
		}
		if o.kubeVersion != "" {
			st.KubernetesVersion = o.kubeVersion
		}
	}
	meta.SetStatusCondition(&st.Conditions, conn)
	meta.SetStatusCondition(&st.Conditions, ready)
	refreshed := u.tunnel(st, o.tunnel, orig.Status.Tunnel, name)
	u.cfg.Metrics.set(name, healthOf(&c))
	// Skip the write when only the heartbeat moved and it is recent.
	if orig.Status.LastHeartbeatTime != nil && st.LastHeartbeatTime != nil && now.Sub(orig.Status.LastHeartbeatTime.Time) < u.cfg.Heartbeat {
		cmp := c.Status.DeepCopy()
		cmp.LastHeartbeatTime = orig.Status.LastHeartbeatTime
		if equality.Semantic.DeepEqual(*cmp, orig.Status) {
			u.figuresWritten(name, refreshed, st.Tunnel)
			return nil
		}
	} else if equality.Semantic.DeepEqual(c.Status, orig.Status) {
		u.figuresWritten(name, refreshed, st.Tunnel)
		return nil
	}
	if err := u.cfg.Client.Status().Patch(ctx, &c, client.MergeFrom(orig)); err != nil {
		return err
	}
	u.figuresWritten(name, refreshed, st.Tunnel)
	return nil
}

// tunnel sets st.Tunnel from the replicas' merged measurements t and what
// was written before, prev, and says whether it took t's moving figures
// (round trip, streams, bytes, skew): it does when they are due, or when
// the cluster connected or disconnected; otherwise it keeps prev's.
func (u *StatusUpdater) tunnel(st *v1alpha1.ClusterStatus, t, prev *v1alpha1.TunnelStatus, cluster string) bool {
	if t == nil {
		if prev == nil {
			return false
		}
		// No replica reports anything any more: what happened last stays.
		t = &v1alpha1.TunnelStatus{RTTWindow: &metav1.Duration{Duration: u.cfg.Tunnel.Window}}
	} else {
		t = t.DeepCopy()
	}
	keepLatest(t, prev)
	refreshed := true
	if prev != nil && (prev.ConnectedSince == nil) == (t.ConnectedSince == nil) {
		u.mu.Lock()
		w, ok := u.figures[cluster]
		u.mu.Unlock()
		if ok && u.cfg.Now().Sub(w.at) < u.cfg.Tunnel.WriteInterval {
			keepFigures(t, prev)
			refreshed = false
		}
	}
	st.Tunnel = t
	return refreshed
}

// figuresWritten notes that cluster's moving figures t are written now.
func (u *StatusUpdater) figuresWritten(cluster string, refreshed bool, t *v1alpha1.TunnelStatus) {
	if !refreshed {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.figures[cluster] = writtenFigures{at: u.cfg.Now(), t: t.DeepCopy()}
}

// healthOf is what the fleet's series say of c as written.
func healthOf(c *v1alpha1.Cluster) clusterHealth {
	st := &c.Status
	h := clusterHealth{
		connected: meta.IsStatusConditionTrue(st.Conditions, v1alpha1.ClusterTunnelConnected),
		ready:     meta.IsStatusConditionTrue(st.Conditions, v1alpha1.ClusterReady),
	}
	if t := st.Tunnel; t != nil {
		h.flapping, h.reconnects, h.streams = t.Flapping, t.Reconnects, t.Streams
		if t.RTT != nil {
			h.rtt = t.RTT.Duration
		}
	}
	if !h.connected {
		h.disconnectedSince = c.CreationTimestamp.Time
		if t := st.Tunnel; t != nil && t.LastDisconnectTime != nil {
			h.disconnectedSince = t.LastDisconnectTime.Time
		}
	}
	return h
}
