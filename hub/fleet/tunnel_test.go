package fleet

import (
	"context"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
	apischeme "backhaul.io/backhaul/pkg/apis/scheme"
	"backhaul.io/backhaul/pkg/testutil"
)

func ms(t time.Time) int64 { return t.UnixMilli() }

func TestReconnectsPairLossesWithLaterOpens(t *testing.T) {
	tests := []struct {
		name          string
		opens, losses []int64
		want          int
	}{
		{name: "first connects", opens: []int64{1, 1}, want: 0},
		{name: "lost, not back yet", opens: []int64{1, 1}, losses: []int64{5}, want: 0},
		{name: "lost and back", opens: []int64{1, 6}, losses: []int64{5}, want: 1},
		{name: "back within the same millisecond", opens: []int64{5}, losses: []int64{5}, want: 1},
		{name: "an open before the loss replaces nothing", opens: []int64{4}, losses: []int64{5}, want: 0},
		{name: "two lost at once, one back", opens: []int64{9}, losses: []int64{5, 5}, want: 1},
		{name: "flapping", opens: []int64{1, 3, 5, 7}, losses: []int64{2, 4, 6, 8}, want: 3},
		{name: "unsorted, from several replicas", opens: []int64{7, 3, 1, 5}, losses: []int64{6, 2, 4}, want: 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { assert.Equal(t, tc.want, reconnects(tc.opens, tc.losses)) })
	}
}

func TestMergeTunnel(t *testing.T) {
	cfg := DefaultTunnelHealthConfig()
	now := time.Unix(1_900_000_000, 0)
	skewA, skewB := int64(-1500), int64(40)
	reports := []v1alpha1.ReplicaTunnel{
		{ // holds the older session, over a slower path; the agent's first session was lost here
			Name: "edge", RTTMicros: 30_000, RTTP99Micros: 90_000, Streams: 2, BytesTx: 100, BytesRx: 1000,
			Since: now.Add(-time.Hour).Unix(), CertNotAfter: now.Add(24 * time.Hour).Unix(), SkewMillis: &skewA,
			Opens: []int64{ms(now.Add(-9 * time.Minute))}, Losses: []int64{ms(now.Add(-5 * time.Minute))},
			Disconnect: now.Add(-5 * time.Minute).Unix(), DisconnectReason: "keepalive_timeout",
		},
		{ // the newest session, fastest: it came back here
			Name: "edge", RTTMicros: 12_000, RTTP99Micros: 20_000, Streams: 3, BytesTx: 10, BytesRx: 1,
			Since: now.Add(-2 * time.Hour).Unix(), Newest: now.Add(-4 * time.Minute).Unix(),
			CertNotAfter: now.Add(48 * time.Hour).Unix(), SkewMillis: &skewB,
			Opens:   []int64{ms(now.Add(-4 * time.Minute))},
			Refusal: now.Add(-7 * time.Minute).Unix(), RefusalReason: "certificate expired",
		},
		{ // held once, lost, never back here; a refusal since
			Name: "edge", RTTMicros: 1_000, Disconnect: now.Add(-2 * time.Minute).Unix(), DisconnectReason: "agent_closed",
			Refusal: now.Add(-time.Minute).Unix(), RefusalReason: "certificate revoked",
		},
	}
	got := mergeTunnel(reports, cfg)
	require.NotNil(t, got)
	assert.Equal(t, 12*time.Millisecond, got.RTT.Duration, "the fastest replica holding a session; a replica without one no longer counts")
	assert.Equal(t, 20*time.Millisecond, got.RTTP99.Duration, "the same replica's p99")
	assert.Equal(t, cfg.Window, got.RTTWindow.Duration)
	assert.EqualValues(t, 1, got.Reconnects, "lost at one replica, back at another")
	assert.False(t, got.Flapping)
	assert.EqualValues(t, 5, got.Streams)
	assert.EqualValues(t, 110, got.BytesTx)
	assert.EqualValues(t, 1001, got.BytesRx)
	assert.Equal(t, now.Add(-2*time.Hour).Unix(), got.ConnectedSince.Unix(), "the oldest open session")
	assert.Equal(t, now.Add(48*time.Hour).Unix(), got.CertificateNotAfter.Unix(), "the newest session's")
	assert.Equal(t, 40*time.Millisecond, got.ClockSkew.Duration)
	assert.Equal(t, "agent_closed", got.LastDisconnectReason)
	assert.Equal(t, now.Add(-2*time.Minute).Unix(), got.LastDisconnectTime.Unix())
	assert.Equal(t, "certificate revoked", got.LastRefusalReason)

	cfg.FlappingReconnects = 1
	assert.True(t, mergeTunnel(reports, cfg).Flapping)
	assert.Nil(t, mergeTunnel(nil, cfg))

	gone := mergeTunnel(reports[2:], cfg)
	assert.Nil(t, gone.RTT, "no session anywhere: no round trip")
	assert.Nil(t, gone.ConnectedSince)
	assert.Equal(t, "agent_closed", gone.LastDisconnectReason)
}

// batchEnv drives a StatusUpdater the way Start does, on a clock the test
// moves, and counts its status writes.
type batchEnv struct {
	updater  *StatusUpdater
	host     client.Client
	clock    *testutil.FakeClock
	writes   atomic.Int32
	replicas []Replica
}

func newBatchEnv(t *testing.T) *batchEnv {
	scheme, err := apischeme.New()
	require.NoError(t, err)
	e := &batchEnv{clock: testutil.NewFakeClock()}
	e.host = fake.NewClientBuilder().WithScheme(scheme).WithObjects(cluster("edge", "uid-1")).
		WithStatusSubresource(&v1alpha1.Cluster{}).
		WithInterceptorFuncs(interceptor.Funcs{
			SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, p client.Patch, opts ...client.SubResourcePatchOption) error {
				e.writes.Add(1)
				return c.SubResource(sub).Patch(ctx, obj, p, opts...)
			},
		}).Build()
	clusters := &Clusters{log: testutil.Logger(t), uids: map[string]types.UID{}, cidrs: map[string][]string{}}
	clusters.set(cluster("edge", "uid-1"))
	e.updater = NewStatusUpdater(StatusConfig{
		Client: e.host, Clusters: clusters, Replicas: func() []Replica { return e.replicas },
		Resync: time.Second, Heartbeat: time.Minute, Tunnel: DefaultTunnelHealthConfig(), Now: e.clock.Now, Log: testutil.Logger(t),
	})
	return e
}

// tick is one resync: a heartbeat's when all.
func (e *batchEnv) tick(t *testing.T, all bool) {
	t.Helper()
	for _, name := range e.updater.changed(all) {
		require.NoError(t, e.updater.update(t.Context(), name))
	}
}

func (e *batchEnv) tunnel(t *testing.T) *v1alpha1.TunnelStatus {
	t.Helper()
	var c v1alpha1.Cluster
	require.NoError(t, e.host.Get(t.Context(), types.NamespacedName{Name: "edge"}, &c))
	return c.Status.Tunnel
}

func holding(renewed time.Time, t v1alpha1.ReplicaTunnel) []Replica {
	return []Replica{{Name: "hub-a", Renewed: renewed, Clusters: held("edge", true),
		Tunnels: map[string]v1alpha1.ReplicaTunnel{"edge": t}}}
}

// TestStatusBatchesTunnelWrites: the round trip moves at every probe,
// yet it is written once per WriteInterval; a refusal and a disconnect
// are written at once.
func TestStatusBatchesTunnelWrites(t *testing.T) {
	e := newBatchEnv(t)
	renewed := e.clock.Now()
	since := e.clock.Now().Unix()
	measured := func(i int) v1alpha1.ReplicaTunnel {
		return v1alpha1.ReplicaTunnel{Name: "edge", Since: since, RTTMicros: int64(10_000 + i), RTTP99Micros: 30_000, BytesTx: int64(i * 100), Streams: int32(i % 3)}
	}
	e.replicas = holding(renewed, measured(0))
	e.tick(t, true)
	require.EqualValues(t, 1, e.writes.Load(), "connected: written at once")
	assert.Equal(t, 10*time.Millisecond, e.tunnel(t).RTT.Duration)

	// Three minutes of resyncs, one a second, each with a new round trip
	// and more bytes; a heartbeat every minute.
	for i := 1; i <= 180; i++ {
		e.clock.Advance(time.Second)
		e.replicas = holding(renewed, measured(i))
		e.tick(t, i%60 == 0)
	}
	assert.EqualValues(t, 4, e.writes.Load(), "180 new round trips, written once a minute")
	got := e.tunnel(t)
	assert.Equal(t, 10_180*time.Microsecond, got.RTT.Duration, "the latest round trip as of the last write")
	assert.EqualValues(t, 18_000, got.BytesTx)

	// Refused: written at once, with the figures as they were.
	e.clock.Advance(time.Second)
	r := measured(181)
	r.Refusal, r.RefusalReason = e.clock.Now().Unix(), "certificate expired"
	e.replicas = holding(renewed, r)
	e.tick(t, false)
	assert.EqualValues(t, 5, e.writes.Load())
	got = e.tunnel(t)
	assert.Equal(t, "certificate expired", got.LastRefusalReason)
	assert.Equal(t, 10_180*time.Microsecond, got.RTT.Duration, "the round trip waits for its interval")

	// Disconnected: written at once; the round trip goes, the refusal
	// stays although no replica reports it any more.
	e.clock.Advance(time.Second)
	e.replicas = []Replica{{Name: "hub-a", Renewed: renewed, Tunnels: map[string]v1alpha1.ReplicaTunnel{"edge": {
		Name: "edge", RTTMicros: 10_181, Disconnect: e.clock.Now().Unix(), DisconnectReason: "keepalive_timeout",
	}}}}
	e.tick(t, false)
	assert.EqualValues(t, 6, e.writes.Load())
	got = e.tunnel(t)
	assert.Nil(t, got.RTT)
	assert.Nil(t, got.ConnectedSince)
	assert.Equal(t, "keepalive_timeout", got.LastDisconnectReason)
	assert.Equal(t, "certificate expired", got.LastRefusalReason)

	// Past the replica's window it reports nothing: nothing to write,
	// and what happened last stays.
	e.replicas = nil
	for range 10 {
		e.clock.Advance(time.Second)
		e.tick(t, false)
	}
	assert.EqualValues(t, 6, e.writes.Load())
	got = e.tunnel(t)
	assert.Equal(t, "keepalive_timeout", got.LastDisconnectReason)
	assert.Equal(t, "certificate expired", got.LastRefusalReason)
	assert.Equal(t, metav1.ConditionFalse, condition(e.status(t), v1alpha1.ClusterTunnelConnected).Status)
}

func (e *batchEnv) status(t *testing.T) v1alpha1.ClusterStatus {
	t.Helper()
	var c v1alpha1.Cluster
	require.NoError(t, e.host.Get(t.Context(), types.NamespacedName{Name: "edge"}, &c))
	return c.Status
}

// TestTunnelComparisonsCoverEveryField: every field of TunnelStatus is
// either a moving figure (batched) or an event (written at once), and a
// field added later must be sorted into one of them.
func TestTunnelComparisonsCoverEveryField(t *testing.T) {
	figures := map[string]bool{"RTT": true, "RTTP99": true, "Streams": true, "BytesTx": true, "BytesRx": true, "ClockSkew": true}
	typ := reflect.TypeFor[v1alpha1.TunnelStatus]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		t.Run(f.Name, func(t *testing.T) {
			a, b := &v1alpha1.TunnelStatus{}, &v1alpha1.TunnelStatus{}
			v := reflect.ValueOf(b).Elem().Field(i)
			switch v.Kind() {
			case reflect.Pointer:
				v.Set(reflect.New(v.Type().Elem()))
				if tm, ok := v.Interface().(*metav1.Time); ok {
					tm.Time = time.Unix(1, 0)
				}
				if d, ok := v.Interface().(*metav1.Duration); ok {
					d.Duration = time.Second
				}
			case reflect.Int32, reflect.Int64:
				v.SetInt(1)
			case reflect.Bool:
				v.SetBool(true)
			case reflect.String:
				v.SetString("x")
			default:
				t.Fatalf("field %s of kind %s: teach this test", f.Name, v.Kind())
			}
			assert.Equal(t, figures[f.Name], tunnelEventsEqual(a, b), "events compare %s", f.Name)
			assert.Equal(t, !figures[f.Name], figuresEqual(a, b), "figures compare %s", f.Name)
		})
	}
}
