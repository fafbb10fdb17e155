package fleet

import (
	"errors"
	"fmt"
	"slices"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
)

// TunnelHealthConfig is how Cluster status.tunnel is kept.
type TunnelHealthConfig struct {
	// Window is what the replicas count the p99 and reconnects over
	// (status.tunnel.rttWindow).
	Window time.Duration
	// FlappingReconnects: a cluster with at least this many reconnects
	// within the window is flapping (0: never).
	FlappingReconnects int
	// WriteInterval bounds how often the figures that move all the time
	// (round trip, streams, bytes, clock skew) are written. A connect, a
	// disconnect, a refusal, a change of reconnects or flapping is
	// written at once.
	WriteInterval time.Duration
}

// DefaultTunnelHealthConfig writes round trips at most once a minute and
// calls three reconnects in ten minutes flapping.
func DefaultTunnelHealthConfig() TunnelHealthConfig {
	return TunnelHealthConfig{Window: 10 * time.Minute, FlappingReconnects: 3, WriteInterval: time.Minute}
}

// Validate checks the settings.
func (c TunnelHealthConfig) Validate() error {
	var errs []error
	if c.Window < time.Minute {
		errs = append(errs, fmt.Errorf("tunnel health window %v: at least 1m", c.Window))
	}
	if c.FlappingReconnects < 0 {
		errs = append(errs, errors.New("tunnel flapping threshold may not be negative"))
	}
	if c.WriteInterval < time.Second {
		errs = append(errs, fmt.Errorf("tunnel health write interval %v: at least 1s", c.WriteInterval))
	}
	return errors.Join(errs...)
}

// mergeTunnel folds what the replicas measured of one cluster into its
// status.tunnel, nil when none reported anything. Round trips come from
// the replica with the fastest path (its moving average and its p99:
// the hub reaches the member through whichever replica holds it, and a
// forwarded stream adds only the hop between replicas); streams and bytes
// add up; certificate and clock are the newest session's; the last
// disconnect and refusal are the latest any replica saw. Reconnects pair
// the sessions lost with those opened after, across replicas, since an
// agent often comes back through another one.
func mergeTunnel(reports []v1alpha1.ReplicaTunnel, cfg TunnelHealthConfig) *v1alpha1.TunnelStatus {
	if len(reports) == 0 {
		return nil
	}
	t := &v1alpha1.TunnelStatus{RTTWindow: &metav1.Duration{Duration: cfg.Window}}
	var (
		opens, losses []int64
		fastest       *v1alpha1.ReplicaTunnel
		newest        *v1alpha1.ReplicaTunnel
		since         int64
		disc, ref     int64
	)
	for i := range reports {
		r := &reports[i]
		opens = append(opens, r.Opens...)
		losses = append(losses, r.Losses...)
		if r.Disconnect > disc {
			disc, t.LastDisconnectReason = r.Disconnect, r.DisconnectReason
		}
		if r.Refusal > ref {
			ref, t.LastRefusalReason = r.Refusal, r.RefusalReason
		}
		if r.Since == 0 {
			continue // no session there now: its figures are history
		}
		t.Streams += r.Streams
		t.BytesTx += r.BytesTx
		t.BytesRx += r.BytesRx
		if since == 0 || r.Since < since {
			since = r.Since
		}
		if r.RTTMicros > 0 && (fastest == nil || r.RTTMicros < fastest.RTTMicros) {
			fastest = r
		}
		if newest == nil || newestOf(r) > newestOf(newest) {
			newest = r
		}
	}
	t.Reconnects = int32(reconnects(opens, losses))
	t.Flapping = cfg.FlappingReconnects > 0 && int(t.Reconnects) >= cfg.FlappingReconnects
	t.LastDisconnectTime = unixTime(disc)
	t.LastRefusalTime = unixTime(ref)
	t.ConnectedSince = unixTime(since)
	if fastest != nil {
		t.RTT = micros(fastest.RTTMicros)
		t.RTTP99 = micros(max(fastest.RTTP99Micros, fastest.RTTMicros))
	}
	if newest != nil {
		t.CertificateNotAfter = unixTime(newest.CertNotAfter)
		if newest.SkewMillis != nil {
			t.ClockSkew = &metav1.Duration{Duration: time.Duration(*newest.SkewMillis) * time.Millisecond}
		}
	}
	return t
}

func newestOf(r *v1alpha1.ReplicaTunnel) int64 { return max(r.Newest, r.Since) }

// reconnects pairs each loss with the first open after it: each pair is
// a lost session replaced. Opens without a loss before them (a first
// connect, an agent's second session, a planned replacement) do not
// count, nor losses not replaced (yet). A loss and an open at the same
// moment pair.
func reconnects(opens, losses []int64) int {
	slices.Sort(opens)
	slices.Sort(losses)
	n, pending, i := 0, 0, 0
	for _, o := range opens {
		for ; i < len(losses) && losses[i] <= o; i++ {
			pending++
		}
		if pending > 0 {
			n++
			pending--
		}
	}
	return n
}

func unixTime(sec int64) *metav1.Time {
	if sec == 0 {
		return nil
	}
	t := metav1.Unix(sec, 0)
	return &t
}

func micros(us int64) *metav1.Duration {
	return &metav1.Duration{Duration: time.Duration(us) * time.Microsecond}
}

// keepLatest carries over from prev what a merge of the replicas' recent
// reports may no longer hold: the last disconnect and refusal, which
// replicas publish only within their window, unless the new ones are
// later.
func keepLatest(t, prev *v1alpha1.TunnelStatus) {
	if prev == nil {
		return
	}
	if prev.LastDisconnectTime != nil && (t.LastDisconnectTime == nil || t.LastDisconnectTime.Before(prev.LastDisconnectTime)) {
		t.LastDisconnectTime, t.LastDisconnectReason = prev.LastDisconnectTime.DeepCopy(), prev.LastDisconnectReason
	}
	if prev.LastRefusalTime != nil && (t.LastRefusalTime == nil || t.LastRefusalTime.Before(prev.LastRefusalTime)) {
		t.LastRefusalTime, t.LastRefusalReason = prev.LastRefusalTime.DeepCopy(), prev.LastRefusalReason
	}
}

// keepFigures carries the figures that move all the time (round trip,
// streams, bytes, clock skew) over from prev, written less than
// WriteInterval ago, so that only what an operator must know at once
// makes a write.
func keepFigures(t, prev *v1alpha1.TunnelStatus) {
	t.RTT, t.RTTP99 = prev.RTT.DeepCopy(), prev.RTTP99.DeepCopy()
	t.Streams, t.BytesTx, t.BytesRx = prev.Streams, prev.BytesTx, prev.BytesRx
	t.ClockSkew = prev.ClockSkew.DeepCopy()
}

// figuresEqual compares what keepFigures carries over.
func figuresEqual(a, b *v1alpha1.TunnelStatus) bool {
	return durEqual(a.RTT, b.RTT) && durEqual(a.RTTP99, b.RTTP99) && durEqual(a.ClockSkew, b.ClockSkew) &&
		a.Streams == b.Streams && a.BytesTx == b.BytesTx && a.BytesRx == b.BytesRx
}

func durEqual(a, b *metav1.Duration) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Duration == b.Duration
}
