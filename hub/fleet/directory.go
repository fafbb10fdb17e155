package fleet

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
	"backhaul.io/backhaul/pkg/version"
)

// PeerPortName is the EndpointSlice port the hub replicas reach each
// other on.
const PeerPortName = "peer"

// Replica is one hub replica as the directory sees it.
type Replica struct {
	Name string
	// Address is host:port of its peer listener, from the EndpointSlices;
	// empty when no endpoint names it (yet).
	Address string
	// Ready is the endpoint's ready condition.
	Ready bool
	// Draining: it still serves but its agents are moving away.
	Draining bool
	// Renewed is when it last published.
	Renewed time.Time
	// Clusters it holds sessions for, by name, from its HubReplica.
	Clusters map[string]v1alpha1.HeldCluster
	// Tunnels is what it measured of clusters' tunnels, by name: those it
	// holds and those it lost or refused within its health window.
	Tunnels map[string]v1alpha1.ReplicaTunnel
}

// Holdings is what this replica holds now, from the session registry.
type Holdings func() []v1alpha1.HeldCluster

// Tunnels is what this replica measured of clusters' tunnels, from its
// tunnel health tracker.
type Tunnels func() []v1alpha1.ReplicaTunnel

// DirectoryConfig is what the directory needs.
type DirectoryConfig struct {
	Host *Host
	// Self names this replica (its Pod's name).
	Self string
	// Holdings snapshots this replica's sessions for publication.
	Holdings Holdings
	// Tunnels, when set, snapshots its tunnel health for publication: the
	// replica writing Cluster status merges every replica's.
	Tunnels Tunnels
	// LeaseDuration is how long a published entry is believed after its
	// last write; the directory rewrites at least every third of it.
	LeaseDuration time.Duration
	// BatchDelay gathers changes into one write: 10,000 agents connecting
	// cost one write per BatchDelay, not 10,000.
	BatchDelay time.Duration
	// OnChange is called, outside any lock and never concurrently, with
	// the live replicas (this one included) whenever they change.
	OnChange func([]Replica)
	Log      hclog.Logger
}

// Directory is the session directory kept in the host cluster: each
// replica publishes which clusters it holds in its HubReplica, and reads
// everyone's, together with the EndpointSlices of the peer Service that
// say where each replica listens. A replica that stops drops out at once
// (it deletes its entry); one that dies, when its entry's lease expires —
// and from forwarding as soon as its peer connection breaks.
type Directory struct {
	cfg DirectoryConfig

	dirty    chan struct{} // this replica's holdings changed
	changed  chan struct{} // the host's objects changed
	draining bool
	mu       sync.Mutex
	live     []Replica
	// published is when this replica last wrote its entry (unix nanos);
	// failing, whether its latest attempt failed.
	published atomic.Int64
	failing   atomic.Bool
}

// NewDirectory returns the directory; the host manager runs it.
func NewDirectory(cfg DirectoryConfig) (*Directory, error) {
	if cfg.Host == nil || cfg.Self == "" || cfg.Holdings == nil || cfg.OnChange == nil || cfg.Log == nil {
		return nil, errors.New("directory: Host, Self, Holdings, OnChange and Log are required")
	}
	if cfg.LeaseDuration < 3*time.Second || cfg.BatchDelay <= 0 {
		return nil, fmt.Errorf("directory: lease duration %v (at least 3s) or batch delay %v", cfg.LeaseDuration, cfg.BatchDelay)
	}
	return &Directory{cfg: cfg, dirty: make(chan struct{}, 1), changed: make(chan struct{}, 1)}, nil
}

// watch has the informers of HubReplicas and peer EndpointSlices poke
// refresh.
func (d *Directory) watch(ctx context.Context) error {
	poke := toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { signal(d.changed) },
		UpdateFunc: func(any, any) { signal(d.changed) },
		DeleteFunc: func(any) { signal(d.changed) },
	}
	for _, obj := range []client.Object{&v1alpha1.HubReplica{}, &discoveryv1.EndpointSlice{}} {
		inf, err := d.cfg.Host.Manager.GetCache().GetInformer(ctx, obj)
		if err != nil {
			return fmt.Errorf("directory informer: %w", err)
		}
		if _, err := inf.AddEventHandler(poke); err != nil {
			return fmt.Errorf("directory informer: %w", err)
		}
	}
	return nil
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// HoldingsChanged says this replica's sessions changed; the next batch
// publishes them. It never blocks.
func (d *Directory) HoldingsChanged() { signal(d.dirty) }

// Live is the last set of live replicas, this one included.
func (d *Directory) Live() []Replica {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.live
}

// Start publishes and watches until ctx ends, then deletes this replica's
// entry so the others stop forwarding here at once.
func (d *Directory) Start(ctx context.Context) error {
	if err := d.watch(ctx); err != nil {
		return err
	}
	renew := time.NewTicker(d.cfg.LeaseDuration / 3)
	defer renew.Stop()
	// Expiry needs no event: look again as often as entries can expire.
	expire := time.NewTicker(time.Second)
	defer expire.Stop()
	d.publish(ctx)
	for {
		select {
		case <-ctx.Done():
			d.withdraw()
			return nil
		case <-d.dirty:
			select { // gather a batch
			case <-ctx.Done():
			case <-time.After(d.cfg.BatchDelay):
			}
			d.publish(ctx)
		case <-renew.C:
			d.publish(ctx)
		case <-d.changed:
			d.refresh(ctx)
		case <-expire.C:
			d.refresh(ctx)
		}
	}
}

// NeedLeaderElection: every replica publishes its own entry.
func (d *Directory) NeedLeaderElection() bool { return false }

// Drain marks this replica draining and publishes it now.
func (d *Directory) Drain(ctx context.Context) {
	d.mu.Lock()
	d.draining = true
	d.mu.Unlock()
	d.publish(ctx)
}

// publish writes this replica's HubReplica status.
func (d *Directory) publish(ctx context.Context) {
	held := d.cfg.Holdings()
	slices.SortFunc(held, func(a, b v1alpha1.HeldCluster) int { return cmp.Compare(a.Name, b.Name) })
	d.mu.Lock()
	draining := d.draining
	d.mu.Unlock()
	now := metav1.NewMicroTime(time.Now())
	st := v1alpha1.HubReplicaStatus{
		RenewTime: &now, LeaseDurationSeconds: int32(d.cfg.LeaseDuration / time.Second),
		Draining: draining, ClusterCount: int32(len(held)), Clusters: held,
		Version: version.Version,
	}
	if d.cfg.Tunnels != nil {
		st.Tunnels = d.cfg.Tunnels()
		slices.SortFunc(st.Tunnels, func(a, b v1alpha1.ReplicaTunnel) int { return cmp.Compare(a.Name, b.Name) })
	}
	if err := d.write(ctx, st); err != nil {
		d.failing.Store(true)
		if ctx.Err() == nil {
			d.cfg.Log.Warn("cannot publish this replica's sessions", "error", err)
		}
		return
	}
	d.failing.Store(false)
	d.published.Store(time.Now().UnixNano())
}

// HostReachable says whether this replica can write to its host cluster:
// its latest write succeeded, or one did within half a lease (a single
// failed write is not an outage). A replica that cannot reach its host
// cannot authenticate callers, see revocations or know its peers, and
// should not be sent traffic. Before the first write it is reachable (the
// caches synced).
func (d *Directory) HostReachable() bool {
	p := d.published.Load()
	return p == 0 || !d.failing.Load() || time.Since(time.Unix(0, p)) < d.cfg.LeaseDuration/2
}

func (d *Directory) write(ctx context.Context, st v1alpha1.HubReplicaStatus) error {
	c := d.cfg.Host.Direct
	r := &v1alpha1.HubReplica{}
	r.Namespace, r.Name = d.cfg.Host.Namespace, d.cfg.Self
	if err := c.Get(ctx, client.ObjectKeyFromObject(r), r); err != nil {
		if client.IgnoreNotFound(err) != nil {
			return err
		}
		if err := c.Create(ctx, r); client.IgnoreAlreadyExists(err) != nil {
			return err
		}
	}
	patch := client.MergeFrom(r.DeepCopy())
	r.Status = st
	return c.Status().Patch(ctx, r, patch)
}

// withdraw deletes this replica's entry (shutdown).
func (d *Directory) withdraw() {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	r := &v1alpha1.HubReplica{}
	r.Namespace, r.Name = d.cfg.Host.Namespace, d.cfg.Self
	if err := d.cfg.Host.Direct.Delete(ctx, r); client.IgnoreNotFound(err) != nil {
		d.cfg.Log.Warn("cannot withdraw this replica from the directory", "error", err)
	}
}

// refresh rebuilds the live set from the informers and reports a change.
func (d *Directory) refresh(ctx context.Context) {
	live, err := d.read(ctx)
	if err != nil {
		d.cfg.Log.Warn("cannot read the session directory", "error", err)
		return
	}
	d.mu.Lock()
	same := replicasEqual(d.live, live)
	d.live = live
	d.mu.Unlock()
	if !same {
		d.cfg.OnChange(live)
	}
}

func (d *Directory) read(ctx context.Context) ([]Replica, error) {
	c := d.cfg.Host.Manager.GetClient()
	var entries v1alpha1.HubReplicaList
	if err := c.List(ctx, &entries, client.InNamespace(d.cfg.Host.Namespace)); err != nil {
		return nil, err
	}
	var eps discoveryv1.EndpointSliceList
	if err := c.List(ctx, &eps, client.InNamespace(d.cfg.Host.Namespace)); err != nil {
		return nil, err
	}
	return liveReplicas(d.cfg.Self, entries.Items, eps.Items, time.Now()), nil
}

// liveReplicas joins the directory's entries with the peer endpoints:
// every replica whose entry's lease has not expired (this one always),
// with its address when an endpoint names it.
func liveReplicas(self string, entries []v1alpha1.HubReplica, eps []discoveryv1.EndpointSlice, now time.Time) []Replica {
	endpoints := peerEndpoints(eps)
	var live []Replica
	for i := range entries {
		e := &entries[i]
		st := e.Status
		if e.Name != self {
			if st.RenewTime == nil || now.After(st.RenewTime.Add(time.Duration(st.LeaseDurationSeconds)*time.Second)) {
				continue // its replica is gone
			}
		}
		// Without an endpoint a replica still counts (for status), but
		// nobody can dial it: forwarding needs its address.
		ep := endpoints[e.Name]
		r := Replica{Name: e.Name, Address: ep.address, Ready: ep.ready, Draining: st.Draining, Clusters: make(map[string]v1alpha1.HeldCluster, len(st.Clusters))}
		if st.RenewTime != nil {
			r.Renewed = st.RenewTime.Time
		}
		for _, h := range st.Clusters {
			r.Clusters[h.Name] = h
		}
		if len(st.Tunnels) > 0 {
			r.Tunnels = make(map[string]v1alpha1.ReplicaTunnel, len(st.Tunnels))
			for _, t := range st.Tunnels {
				r.Tunnels[t.Name] = t
			}
		}
		live = append(live, r)
	}
	slices.SortFunc(live, func(a, b Replica) int { return cmp.Compare(a.Name, b.Name) })
	return live
}

type peerEndpoint struct {
	address string
	ready   bool
}

// peerEndpoints maps replica (Pod) name to where its peer listener is,
// from the EndpointSlices' "peer" port.
func peerEndpoints(items []discoveryv1.EndpointSlice) map[string]peerEndpoint {
	out := map[string]peerEndpoint{}
	for _, s := range items {
		var port int32
		for _, p := range s.Ports {
			if p.Name != nil && *p.Name == PeerPortName && p.Port != nil {
				port = *p.Port
			}
		}
		if port == 0 {
			continue
		}
		for _, e := range s.Endpoints {
			name := ""
			switch {
			case e.TargetRef != nil && e.TargetRef.Name != "":
				name = e.TargetRef.Name
			case e.Hostname != nil:
				name = *e.Hostname
			}
			if name == "" || len(e.Addresses) == 0 {
				continue
			}
			ready := e.Conditions.Ready == nil || *e.Conditions.Ready
			out[name] = peerEndpoint{address: net.JoinHostPort(e.Addresses[0], strconv.Itoa(int(port))), ready: ready}
		}
	}
	return out
}

// replicasEqual compares live sets by what forwarding and status use.
// Tunnel health is left out: it moves with every probe, forwarding does
// not care, and the status updater reads the live set at each resync.
func replicasEqual(a, b []Replica) bool {
	return slices.EqualFunc(a, b, func(x, y Replica) bool {
		return x.Name == y.Name && x.Address == y.Address && x.Ready == y.Ready && x.Draining == y.Draining &&
			x.Renewed.Equal(y.Renewed) && maps.EqualFunc(x.Clusters, y.Clusters, heldEqual)
	})
}

func heldEqual(a, b v1alpha1.HeldCluster) bool {
	return a.Name == b.Name && a.Sessions == b.Sessions && a.AgentVersion == b.AgentVersion && a.Ready == b.Ready &&
		a.ReadyMessage == b.ReadyMessage && a.KubernetesVersion == b.KubernetesVersion && a.RTTMicros == b.RTTMicros &&
		slices.Equal(a.NodeAddresses, b.NodeAddresses)
}
