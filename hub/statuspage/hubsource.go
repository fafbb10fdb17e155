package statuspage

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"backhaul.io/backhaul/hub/session"
	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
)

// Prober is what the page reads of session.Prober: the last probe of a
// cluster and its round-trip history, both measured in the background.
type Prober interface {
	Health(cluster string) session.Health
	History(cluster string) []session.RTTSample
}

// Reach says whether a cluster is reachable through this replica now
// (session.Dialer: a session here or at a peer).
type Reach interface {
	Connected(cluster string) bool
}

// Names lists registered clusters without a host cluster (the static
// agent token registry).
type Names interface {
	Names() []string
}

// HubSource is the page's Source over the hub's own pieces. With a host
// cluster, Registered is the manager's cache: listing Cluster objects
// reads the informer's store and costs the host API nothing.
type HubSource struct {
	// Registered lists Cluster objects (nil without a host cluster).
	Registered client.Reader
	// Names lists the registered clusters when Registered is nil (may be
	// nil: then only clusters with a session are shown).
	Names    Names
	Sessions *session.Registry
	Prober   Prober
	Reach    Reach
	// Replica is this replica's name.
	Replica string
}

var _ Source = (*HubSource)(nil)

// History implements Source.
func (h *HubSource) History(cluster string) []session.RTTSample { return h.Prober.History(cluster) }

// local is what this replica holds of one cluster.
type local struct {
	sessions int
	streams  int64
	agent    string // the newest session's
	since    time.Time
}

// Clusters implements Source: Cluster objects (or registered names),
// merged with this replica's sessions and probes, which are fresher than
// the batched status writes.
func (h *HubSource) Clusters(ctx context.Context) ([]Cluster, error) {
	rows := map[string]*Cluster{}
	if h.Registered != nil {
		var list v1alpha1.ClusterList
		// Read only: the informer's objects need no copy.
		if err := h.Registered.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
			return nil, fmt.Errorf("status page: listing clusters: %w", err)
		}
		for i := range list.Items {
			if c := &list.Items[i]; c.DeletionTimestamp == nil {
				rows[c.Name] = fromObject(c)
			}
		}
	} else if h.Names != nil {
		for _, n := range h.Names.Names() {
			rows[n] = &Cluster{Name: n}
		}
	}
	held := map[string]*local{}
	// Sessions come sorted by cluster, then age: the last is the newest.
	for _, s := range h.Sessions.Sessions() {
		info := s.Info()
		l := held[info.Cluster]
		if l == nil {
			l = &local{since: info.Since}
			held[info.Cluster] = l
		}
		l.sessions++
		l.streams += int64(info.Streams)
		l.agent = info.AgentVersion
	}
	for name, l := range held {
		row := rows[name]
		if row == nil {
			row = &Cluster{Name: name}
			rows[name] = row
		}
		h.mergeLocal(row, l)
	}
	out := make([]Cluster, 0, len(rows))
	for _, row := range rows {
		row.Connected = h.Reach.Connected(row.Name)
		if !row.Connected {
			// The Ready condition lags the session by a status write.
			row.Ready = false
		}
		out = append(out, *row)
	}
	slices.SortFunc(out, func(a, b Cluster) int { return cmp.Compare(a.Name, b.Name) })
	return out, nil
}

// mergeLocal lays what this replica holds and measured over the status
// the singleton last wrote.
func (h *HubSource) mergeLocal(row *Cluster, l *local) {
	row.Sessions = l.sessions
	row.AgentVersion = l.agent
	if !slices.Contains(row.Replicas, h.Replica) {
		row.Replicas = append(slices.Clone(row.Replicas), h.Replica)
		slices.Sort(row.Replicas)
	}
	// Alone in holding it, this replica's live count is the cluster's.
	if len(row.Replicas) == 1 || row.Streams == 0 {
		row.Streams = l.streams
	}
	if row.ConnectedSince.IsZero() {
		row.ConnectedSince = l.since
	}
	p := h.Prober.Health(row.Name)
	if p.At.IsZero() {
		return
	}
	row.Ready, row.ReadyMessage = p.Ready, ""
	if !p.Ready {
		row.ReadyMessage = p.Message // why not; when ready, /readyz just said "ok"
	}
	if p.KubernetesVersion != "" {
		row.KubernetesVersion = p.KubernetesVersion
	}
	if row.RTTMicros == 0 {
		row.RTTMicros = p.RTT.Microseconds()
	}
	if p.At.After(row.LastHeartbeat) {
		row.LastHeartbeat = p.At
	}
}

// fromObject is a Cluster object's status as a row.
func fromObject(c *v1alpha1.Cluster) *Cluster {
	st := &c.Status
	row := &Cluster{
		Name: c.Name, AgentVersion: st.AgentVersion, KubernetesVersion: st.KubernetesVersion,
		Replicas: slices.Clone(st.HubReplicas),
	}
	if st.LastHeartbeatTime != nil {
		row.LastHeartbeat = st.LastHeartbeatTime.Time
	}
	if r := meta.FindStatusCondition(st.Conditions, v1alpha1.ClusterReady); r != nil {
		row.Ready = r.Status == metav1.ConditionTrue
		if !row.Ready {
			row.ReadyMessage = r.Message
		}
	}
	t := st.Tunnel
	if t == nil {
		return row
	}
	row.RTTMicros = micros(t.RTT)
	row.RTTP99Micros = micros(t.RTTP99)
	row.Reconnects, row.Flapping = t.Reconnects, t.Flapping
	row.Streams, row.BytesTx, row.BytesRx = int64(t.Streams), t.BytesTx, t.BytesRx
	row.ConnectedSince = timeOf(t.ConnectedSince)
	row.LastDisconnect, row.LastDisconnectReason = timeOf(t.LastDisconnectTime), t.LastDisconnectReason
	row.LastRefusal, row.LastRefusalReason = timeOf(t.LastRefusalTime), t.LastRefusalReason
	return row
}

func micros(d *metav1.Duration) int64 {
	if d == nil {
		return 0
	}
	return d.Microseconds()
}

func timeOf(t *metav1.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.Time
}
