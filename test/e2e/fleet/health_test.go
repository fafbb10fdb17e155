package fleet

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/types"

	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
	"backhaul.io/backhaul/pkg/identity"
	"backhaul.io/backhaul/test/harness"
	"backhaul.io/backhaul/tunnel"
)

// cluster reads a Cluster object from the host cluster.
func (e *environment) cluster(ctx context.Context, name string) (*v1alpha1.Cluster, error) {
	out, err := e.hostKubectl(ctx, "", "get", "clusters.backhaul.io", name, "-o", "json")
	if err != nil {
		return nil, fmt.Errorf("%w: %s", err, out)
	}
	var c v1alpha1.Cluster
	return &c, json.Unmarshal([]byte(out), &c)
}

// waitTunnel waits until cluster's status.tunnel satisfies ok, and
// returns it.
func (e *environment) waitTunnel(t *testing.T, ctx context.Context, cluster, what string, ok func(*v1alpha1.TunnelStatus) error) *v1alpha1.TunnelStatus {
	t.Helper()
	var last *v1alpha1.TunnelStatus
	err := harness.WaitFor(ctx, 90*time.Second, 500*time.Millisecond, func() error {
		c, err := e.cluster(ctx, cluster)
		if err != nil {
			return err
		}
		if last = c.Status.Tunnel; last == nil {
			return errors.New("no status.tunnel yet")
		}
		return ok(last)
	})
	b, _ := json.Marshal(last)
	require.NoError(t, err, "%s: %s; last status.tunnel: %s", cluster, what, b)
	return last
}

// agentCertUntil is an agent certificate for cluster (whose Cluster has
// uid) signed by the hub's CA, valid from notBefore until notAfter.
func (e *environment) agentCertUntil(t *testing.T, cluster, uid string, notBefore, notAfter time.Time) tls.Certificate {
	t.Helper()
	caPEM, err := os.ReadFile(e.hub.CA.CertFile)
	require.NoError(t, err)
	keyPEM, err := os.ReadFile(e.hub.CA.KeyFile)
	require.NoError(t, err)
	cb, _ := pem.Decode(caPEM)
	kb, _ := pem.Decode(keyPEM)
	require.NotNil(t, cb)
	require.NotNil(t, kb)
	caCert, err := x509.ParseCertificate(cb.Bytes)
	require.NoError(t, err)
	caKey, err := x509.ParseECPrivateKey(kb.Bytes)
	require.NoError(t, err)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	id := identity.AgentIdentity{Cluster: cluster, UID: types.UID(uid)}
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: id.CommonName(), Organization: []string{identity.AgentGroup}},
		URIs:         []*url.URL{id.URI()},
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
		NotBefore: notBefore, NotAfter: notAfter,
	}, caCert, &key.PublicKey, caKey)
	require.NoError(t, err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// hubMetric reads the first sample of name whose line contains every
// one of labels from the hub's /metrics (0 when there is none).
func (e *environment) hubMetric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	resp, err := http.Get(e.hub.AdminURL + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
line:
	for sc.Scan() {
		l := sc.Text()
		if !strings.HasPrefix(l, name+" ") && !strings.HasPrefix(l, name+"{") {
			continue
		}
		for _, lb := range labels {
			if !strings.Contains(l, lb) {
				continue line
			}
		}
		f := strings.Fields(l)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		require.NoError(t, err)
		return v
	}
	return 0
}

// TestTunnelHealth: what the hub measures of each tunnel in the
// background reaches Cluster status.tunnel, backhaulctl cluster list -o
// wide and the hub's metrics: the round trip, when the session started,
// the agent certificate's expiry and clock; a restarted agent is a
// reconnect with its reason; an agent refused for an expired or a revoked
// certificate is recorded against its cluster.
func TestTunnelHealth(t *testing.T) {
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	t.Run("measured", func(t *testing.T) {
		tun := e.waitTunnel(t, ctx, "f1", "round trip and clock measured", func(t *v1alpha1.TunnelStatus) error {
			if t.RTT == nil || t.RTTP99 == nil || t.ConnectedSince == nil || t.CertificateNotAfter == nil || t.ClockSkew == nil {
				return errors.New("not all measured yet")
			}
			return nil
		})
		b, _ := json.MarshalIndent(tun, "", "  ")
		t.Logf("f1 status.tunnel:\n%s", b)
		assert.Positive(t, tun.RTT.Duration)
		assert.GreaterOrEqual(t, tun.RTTP99.Duration, tun.RTT.Duration/2)
		assert.Equal(t, 10*time.Minute, tun.RTTWindow.Duration, "the default window")
		assert.False(t, tun.ConnectedSince.After(time.Now()))
		// The suite's agent certificates live two minutes.
		assert.WithinDuration(t, time.Now().Add(time.Minute), tun.CertificateNotAfter.Time, 2*time.Minute)
		assert.Less(t, tun.ClockSkew.Duration.Abs(), 5*time.Second, "agent and hub share this machine's clock")
		assert.False(t, tun.Flapping)

		out, err := e.ctl(ctx, "cluster", "list", "-o", "wide")
		require.NoError(t, err, out)
		t.Logf("backhaulctl cluster list -o wide:\n%s", out)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		assert.Regexp(t, `^NAME\s+CONNECTED\s+READY\s+AGENT\s+KUBERNETES\s+HEARTBEAT\s+AGE\s+AGENTS\s+RTT\s+P99\s+RECONNECTS\s+STREAMS\s+LAST-DISCONNECT\s+HUB-REPLICAS\s+LABELS$`, lines[0])
		var f1 string
		for _, l := range lines {
			if strings.HasPrefix(l, "f1 ") {
				f1 = l
			}
		}
		assert.Regexp(t, regexp.MustCompile(`^f1\s+True\s+True\s+\S+\s+v1\.36\.\d+\s+\S+\s+\S+\s+\d+\s+\d+(\.\d+)?ms\s+\d+(\.\d+)?ms\s+\d+\s+\d+\s+`), f1)

		assert.Positive(t, e.hubMetric(t, "backhaul_hub_tunnel_rtt_seconds_count"), "every background round trip")
		assert.GreaterOrEqual(t, e.hubMetric(t, "backhaul_hub_clusters", `state="connected"`), float64(len(memberNames)))
	})

	t.Run("agent restarted", func(t *testing.T) {
		before, err := e.cluster(ctx, "f2")
		require.NoError(t, err)
		reconnects := int32(0)
		if before.Status.Tunnel != nil {
			reconnects = before.Status.Tunnel.Reconnects
		}
		stopped := time.Now()
		e.agent("f2").Stop()
		tun := e.waitTunnel(t, ctx, "f2", "the lost session recorded", func(t *v1alpha1.TunnelStatus) error {
			if t.LastDisconnectTime == nil || t.LastDisconnectTime.Time.Before(stopped.Truncate(time.Second)) || t.ConnectedSince != nil {
				return errors.New("not disconnected yet")
			}
			return nil
		})
		assert.Equal(t, "agent_closed", tun.LastDisconnectReason, "SIGTERM: the agent says goodbye")
		assert.Nil(t, tun.RTT, "no round trip without a session")
		assert.Positive(t, e.hubMetric(t, "backhaul_hub_session_disconnects_total", `reason="agent_closed"`))
		assert.Positive(t, e.hubMetric(t, "backhaul_hub_cluster_longest_disconnected_seconds"))
		out, err := e.ctl(ctx, "cluster", "get", "f2", "-o", "wide")
		require.NoError(t, err, out)
		t.Logf("backhaulctl cluster get f2 -o wide:\n%s", out)
		assert.Regexp(t, `\sagent_closed \(\S+\)\s`, out)

		require.NoError(t, e.startAgent(ctx, "f2", e.agentURL))
		tun = e.waitTunnel(t, ctx, "f2", "the reconnect counted", func(t *v1alpha1.TunnelStatus) error {
			if t.ConnectedSince == nil || t.Reconnects <= reconnects {
				return fmt.Errorf("reconnects %d", t.Reconnects)
			}
			return nil
		})
		assert.False(t, tun.ConnectedSince.Time.Before(stopped.Truncate(time.Second)))
	})

	t.Run("refused agents", func(t *testing.T) {
		c, err := e.cluster(ctx, "f2")
		require.NoError(t, err)
		uid := string(c.UID)
		for _, tc := range []struct {
			name   string
			cert   tls.Certificate
			status int
			reason string
		}{
			{"expired", e.agentCertUntil(t, "f2", uid, time.Now().Add(-10*time.Minute), time.Now().Add(-time.Minute)),
				http.StatusUnauthorized, "certificate expired"},
			{"revoked", e.agentCertUntil(t, "f2", "uid-of-an-earlier-f2", time.Now().Add(-time.Minute), time.Now().Add(time.Hour)),
				http.StatusForbidden, "certificate revoked: it was issued to an earlier cluster of this name"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				at := time.Now().Truncate(time.Second)
				var he *tunnel.HandshakeError
				require.ErrorAs(t, e.dialAs(ctx, &tc.cert, "f2"), &he)
				assert.Equal(t, tc.status, he.StatusCode, he.Reason)
				tun := e.waitTunnel(t, ctx, "f2", "the refusal recorded", func(t *v1alpha1.TunnelStatus) error {
					if t.LastRefusalReason != tc.reason || t.LastRefusalTime == nil || t.LastRefusalTime.Time.Before(at) {
						return fmt.Errorf("last refusal %q", t.LastRefusalReason)
					}
					return nil
				})
				assert.NotNil(t, tun.ConnectedSince, "the real agent stays connected")
			})
		}
	})
}
