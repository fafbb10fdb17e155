package statuspage

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"k8s.io/utils/clock"
)

// snapshot is the fleet as one build saw it, each cluster already
// encoded. It is never modified once published.
type snapshot struct {
	// gen changes when any row does; changed is when it last did.
	gen     uint64
	changed time.Time
	built   time.Time
	names   []string // sorted
	rows    [][]byte // JSON of each cluster, in names' order
	index   map[string]int
	// clusters are the rows before encoding, so the next build encodes
	// only what changed.
	clusters []Cluster
}

// builder makes snapshots in the background, one per refresh while
// someone looks (asked within warm) and none otherwise: a fleet nobody
// looks at costs nothing, and an open page never waits for a build nor
// sees data older than refresh.
type builder struct {
	src     Source
	refresh time.Duration
	warm    time.Duration
	clock   clock.Clock
	log     hclog.Logger
	metrics *Metrics

	cur   atomic.Pointer[snapshot]
	want  chan struct{}
	asked atomic.Int64 // clock time of the last request, unix nanoseconds

	mu      sync.Mutex
	done    chan struct{} // closed, and replaced, after each build attempt
	lastErr error
}

func newBuilder(src Source, refresh, warm time.Duration, clk clock.Clock, log hclog.Logger, m *Metrics) *builder {
	return &builder{src: src, refresh: refresh, warm: warm, clock: clk, log: log, metrics: m,
		want: make(chan struct{}, 1), done: make(chan struct{})}
}

// run builds snapshots, at most one per refresh, from the first request
// until none came for warm, and again from the next; until ctx ends.
func (b *builder) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.want:
		}
		for {
			if cur := b.cur.Load(); cur != nil {
				if wait := b.refresh - b.clock.Since(cur.built); wait > 0 {
					select {
					case <-ctx.Done():
						return
					case <-b.clock.After(wait):
					}
				}
			}
			b.attempt(ctx)
			if b.clock.Since(time.Unix(0, b.asked.Load())) > b.warm {
				break // nobody looks
			}
		}
	}
}

func (b *builder) attempt(ctx context.Context) {
	err := b.build(ctx)
	if err != nil {
		b.log.Warn("status page snapshot failed", "error", err)
	}
	b.mu.Lock()
	b.lastErr = err
	close(b.done)
	b.done = make(chan struct{})
	b.mu.Unlock()
}

// get returns the newest snapshot and wakes the builder when it idles: a
// request never waits for a build, except the first ever, which has
// nothing to show before it.
func (b *builder) get(ctx context.Context) (*snapshot, error) {
	b.asked.Store(b.clock.Now().UnixNano())
	b.mu.Lock()
	done := b.done
	b.mu.Unlock()
	select {
	case b.want <- struct{}{}:
	default: // awake already
	}
	cur := b.cur.Load()
	if cur != nil {
		return cur, nil
	}
	select {
	case <-done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if cur = b.cur.Load(); cur != nil {
		return cur, nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return nil, cmp.Or(b.lastErr, fmt.Errorf("status page: no snapshot yet"))
}

// build reads the source and publishes the result.
func (b *builder) build(ctx context.Context) error {
	start := b.clock.Now()
	clusters, err := b.src.Clusters(ctx)
	if err != nil {
		return err
	}
	slices.SortFunc(clusters, func(x, y Cluster) int { return cmp.Compare(x.Name, y.Name) })
	clusters = slices.CompactFunc(clusters, func(x, y Cluster) bool { return x.Name == y.Name })
	next := &snapshot{built: start, names: make([]string, len(clusters)), rows: make([][]byte, len(clusters)),
		index: make(map[string]int, len(clusters))}
	prev := b.cur.Load()
	changed := prev == nil || len(prev.rows) != len(clusters)
	for i := range clusters {
		c := &clusters[i]
		next.names[i], next.index[c.Name] = c.Name, i
		if j, ok := prevIndex(prev, c.Name); ok && sameCluster(&prev.clusters[j], c) {
			next.rows[i] = prev.rows[j]
			changed = changed || j != i
			continue
		}
		row, err := json.Marshal(c)
		if err != nil {
			return fmt.Errorf("status page: encoding %s: %w", c.Name, err)
		}
		next.rows[i], changed = row, true
	}
	next.clusters = clusters
	switch {
	case !changed:
		next.gen, next.changed = prev.gen, prev.changed
	case prev == nil:
		next.gen, next.changed = 1, start
	default:
		next.gen, next.changed = prev.gen+1, start
	}
	b.cur.Store(next)
	b.metrics.built(b.clock.Since(start), len(clusters))
	return nil
}

func prevIndex(prev *snapshot, name string) (int, bool) {
	if prev == nil {
		return 0, false
	}
	j, ok := prev.index[name]
	return j, ok
}

// sameCluster says whether a and b encode the same. It lists every field:
// TestSameClusterSeesEveryField fails when a new one is missing here.
func sameCluster(a, b *Cluster) bool {
	return a.Name == b.Name && a.Connected == b.Connected && a.Ready == b.Ready && a.ReadyMessage == b.ReadyMessage &&
		a.RTTMicros == b.RTTMicros && a.RTTP99Micros == b.RTTP99Micros && a.Reconnects == b.Reconnects &&
		a.Flapping == b.Flapping && a.Streams == b.Streams && a.BytesTx == b.BytesTx && a.BytesRx == b.BytesRx &&
		a.Sessions == b.Sessions && a.AgentVersion == b.AgentVersion && a.KubernetesVersion == b.KubernetesVersion &&
		slices.Equal(a.Replicas, b.Replicas) && a.ConnectedSince.Equal(b.ConnectedSince) &&
		a.LastHeartbeat.Equal(b.LastHeartbeat) && a.LastDisconnect.Equal(b.LastDisconnect) &&
		a.LastDisconnectReason == b.LastDisconnectReason && a.LastRefusal.Equal(b.LastRefusal) &&
		a.LastRefusalReason == b.LastRefusalReason
}
