package statuspage

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"k8s.io/utils/clock"

	"backhaul.io/backhaul/hub/session"
)

// benchSource is a fleet whose round trips change on every read when
// churn is set (the worst case: every row re-encoded and new).
type benchSource struct {
	clusters []Cluster
	churn    bool
	reads    int64
}

func (s *benchSource) Clusters(context.Context) ([]Cluster, error) {
	s.reads++
	out := make([]Cluster, len(s.clusters))
	copy(out, s.clusters)
	if s.churn {
		for i := range out {
			out[i].RTTMicros += s.reads
		}
	}
	return out, nil
}

func (s *benchSource) History(string) []session.RTTSample { return nil }

func benchFleet(n int) []Cluster {
	now := time.Now()
	out := make([]Cluster, n)
	for i := range out {
		out[i] = Cluster{Name: fmt.Sprintf("site-%05d", i), Connected: i%13 != 0, Ready: i%29 != 0,
			RTTMicros: int64(2000 + i%9000), RTTP99Micros: int64(9000 + i%9000), Streams: int64(i % 40),
			BytesTx: int64(i) << 12, BytesRx: int64(i) << 14, Sessions: 1, AgentVersion: "v0.9.0",
			KubernetesVersion: "v1.36.3", Replicas: []string{"hub-0"}, ConnectedSince: now, LastHeartbeat: now}
	}
	return out
}

// BenchmarkSnapshot10k is the background cost of one snapshot of 10,000
// clusters: read the source, encode every row, compare with the last.
func BenchmarkSnapshot10k(b *testing.B) {
	for _, churn := range []bool{false, true} {
		b.Run(fmt.Sprintf("every-row-changed=%v", churn), func(b *testing.B) {
			src := &benchSource{clusters: benchFleet(10000), churn: churn}
			bl := newBuilder(src, time.Second, time.Second, clock.RealClock{}, hclog.NewNullLogger(), nil)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if err := bl.build(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
