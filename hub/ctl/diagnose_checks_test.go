package ctl

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
	"backhaul.io/backhaul/pkg/identity"
	"backhaul.io/backhaul/pkg/version"
)

const testHubURL = "wss://hub.example.com:8443"

func ago(d time.Duration) *metav1.Time { t := metav1.NewTime(testNow.Add(-d)); return &t }
func dur(d time.Duration) *metav1.Duration {
	return &metav1.Duration{Duration: d}
}

// connectedCluster is a healthy cluster as the hub records one: connected
// for 2h, Ready, the agent of this build, tunnel health measured.
func connectedCluster(name string, opts ...clusterOpt) *v1alpha1.Cluster {
	base := []clusterOpt{
		withCondition(v1alpha1.ClusterTunnelConnected, metav1.ConditionTrue),
		withCondition(v1alpha1.ClusterReady, metav1.ConditionTrue),
		withStatus(version.Version, "v1.36.3", 5*time.Second, "hub-0"),
		withTunnel(func(t *v1alpha1.TunnelStatus) {
			t.RTT, t.RTTP99, t.RTTWindow = dur(12*time.Millisecond), dur(20*time.Millisecond), dur(time.Hour)
			t.ConnectedSince = ago(2 * time.Hour)
			t.Streams, t.BytesTx, t.BytesRx = 3, 1<<20, 4<<20
			t.CertificateNotAfter = ago(-20 * 24 * time.Hour)
			t.ClockSkew = dur(300 * time.Millisecond)
		}),
	}
	return newCluster(name, 72*time.Hour, append(base, opts...)...)
}

// disconnectedCluster was connected until 20 min ago.
func disconnectedCluster(name string, opts ...clusterOpt) *v1alpha1.Cluster {
	base := []clusterOpt{
		withCondition(v1alpha1.ClusterTunnelConnected, metav1.ConditionFalse),
		withCondition(v1alpha1.ClusterReady, metav1.ConditionFalse),
		withStatus(version.Version, "v1.36.3", 21*time.Minute),
		withTunnel(func(t *v1alpha1.TunnelStatus) {
			t.RTT = dur(12 * time.Millisecond)
			t.LastDisconnectTime, t.LastDisconnectReason = ago(20*time.Minute), disconnectKeepalive
			t.CertificateNotAfter = ago(-20 * 24 * time.Hour)
		}),
	}
	return newCluster(name, 72*time.Hour, append(base, opts...)...)
}

func withTunnel(f func(*v1alpha1.TunnelStatus)) clusterOpt {
	return func(c *v1alpha1.Cluster) {
		if c.Status.Tunnel == nil {
			c.Status.Tunnel = &v1alpha1.TunnelStatus{}
		}
		f(c.Status.Tunnel)
	}
}

func withReady(status metav1.ConditionStatus, reason, msg string) clusterOpt {
	return func(c *v1alpha1.Cluster) {
		for i := range c.Status.Conditions {
			if c.Status.Conditions[i].Type == v1alpha1.ClusterReady {
				c.Status.Conditions[i].Status, c.Status.Conditions[i].Reason, c.Status.Conditions[i].Message = status, reason, msg
			}
		}
	}
}

func refusedAt(d time.Duration, reason string) clusterOpt {
	return withTunnel(func(t *v1alpha1.TunnelStatus) { t.LastRefusalTime, t.LastRefusalReason = ago(d), reason })
}

// replica is a HubReplica entry renewed d ago with a 15 s lease.
func replica(name string, renewed time.Duration, holds ...v1alpha1.HeldCluster) *v1alpha1.HubReplica {
	t := metav1.NewMicroTime(testNow.Add(-renewed))
	return &v1alpha1.HubReplica{
		ObjectMeta: metav1.ObjectMeta{Namespace: identity.DefaultNamespace, Name: name},
		Status: v1alpha1.HubReplicaStatus{
			RenewTime: &t, LeaseDurationSeconds: 15, ClusterCount: int32(len(holds)), Clusters: holds,
		},
	}
}

func holding(cluster string) v1alpha1.HeldCluster {
	return v1alpha1.HeldCluster{Name: cluster, Sessions: 1, AgentVersion: version.Version, Ready: true, RTTMicros: 12000, KubernetesVersion: "v1.36.3"}
}

// bootstrapToken is the Secret `cluster add` writes, expiring in d.
func bootstrapToken(c *v1alpha1.Cluster, id string, expiresIn time.Duration, used bool) *corev1.Secret {
	s := tokenSecret(identity.DefaultNamespace, c, identity.Token{ID: id, Secret: "0123456789abcdef"}, testNow.Add(expiresIn))
	if used {
		s.Data[identity.KeyUsed] = []byte("true")
	}
	return s
}

// want is what one finding must say; empty strings are not checked, and
// absent means the check must not report.
type want struct {
	verdict Verdict
	summary []string
	next    []string
	absent  bool
}

func TestDiagnoseFindings(t *testing.T) {
	ca := testCAUntil(t, testNow.Add(5*365*24*time.Hour))
	hubInfo := hubInfoConfigMap(testHubURL, ca)
	live := replica("hub-0", 2*time.Second, holding("edge-1"))
	never := newCluster("edge-1", 2*time.Hour)
	fixedReissue := "backhaulctl cluster add edge-1 --reissue-token"

	tests := []struct {
		name     string
		objs     []client.Object
		args     []string
		wantCode int
		want     map[string]want
	}{
		{
			name: "healthy",
			objs: []client.Object{connectedCluster("edge-1", withLabels(map[string]string{"tier": "edge"})), live, hubInfo},
			want: map[string]want{
				CheckRegistration: {verdict: VerdictOK, summary: []string{"registered 2026-11-19T12:00:00Z (3d ago), labels tier=edge"}},
				CheckTunnel:       {verdict: VerdictOK, summary: []string{"connected since 2026-11-22T10:00:00Z (120m ago)"}},
				CheckRefusals:     {verdict: VerdictOK, summary: []string{"no refusal"}},
				CheckReadiness:    {verdict: VerdictOK, summary: []string{"(Kubernetes v1.36.3) answers /readyz ok, last reached 2026-11-22T11:59:55Z (5s ago)"}},
				CheckLatency:      {verdict: VerdictOK, summary: []string{"RTT 12ms (moving average), p99 20ms over the last 60m"}},
				CheckStability:    {verdict: VerdictOK, summary: []string{"0 reconnects in the last 60m"}},
				CheckCertificate:  {verdict: VerdictOK, summary: []string{"valid until 2026-12-12T12:00:00Z (in 20d)"}},
				CheckClock:        {verdict: VerdictOK, summary: []string{"300ms ahead of the hub's"}},
				CheckAgentVersion: {verdict: VerdictOK, summary: []string{"(the same)"}},
				CheckEnrollment:   {verdict: VerdictOK, summary: []string{"no bootstrap token outstanding"}},
				CheckHubReplicas:  {verdict: VerdictOK, summary: []string{"1 hub replica serving: hub-0; edge-1 on hub-0 (1 session, RTT 12ms, ready)"}},
				CheckHubEndpoint:  {verdict: VerdictOK, summary: []string{testHubURL + ": CA valid until"}},
			},
		},
		{
			name:     "not registered",
			objs:     []client.Object{live, hubInfo},
			wantCode: exitProblem,
			want: map[string]want{
				CheckRegistration: {verdict: VerdictProblem, summary: []string{`no Cluster "edge-1"`}, next: []string{"`backhaulctl cluster list`", "`backhaulctl cluster add edge-1`"}},
				CheckTunnel:       {absent: true},
				CheckEnrollment:   {absent: true},
				CheckHubReplicas:  {verdict: VerdictOK},
			},
		},
		{
			name: "being removed",
			objs: []client.Object{newCluster("edge-1", time.Hour, func(c *v1alpha1.Cluster) {
				c.DeletionTimestamp, c.Finalizers = ago(time.Minute), []string{"backhaul.io/test"}
			}), live, hubInfo},
			wantCode: exitProblem,
			want:     map[string]want{CheckRegistration: {verdict: VerdictProblem, summary: []string{"being removed since", "revoked"}, next: []string{"NotFound"}}},
		},
		{
			name:     "never connected, token unused",
			objs:     []client.Object{never, bootstrapToken(never, "abc123", 40*time.Minute, false), replica("hub-0", time.Second), hubInfo},
			wantCode: exitProblem,
			want: map[string]want{
				CheckTunnel: {verdict: VerdictProblem, summary: []string{"never connected since it was registered 120m ago"},
					next: []string{"onboard.sh", "token abc123 expires 2026-11-22T12:40:00Z (in 40m)", "reaches " + testHubURL, agentLogs}},
				CheckEnrollment:   {verdict: VerdictOK, summary: []string{"token abc123 unused, expires", "waiting for the site to run onboard.sh"}},
				CheckReadiness:    {absent: true},
				CheckLatency:      {absent: true},
				CheckRefusals:     {absent: true},
				CheckAgentVersion: {absent: true},
				CheckHubReplicas:  {verdict: VerdictOK, summary: []string{"none holds a session of edge-1"}},
			},
		},
		{
			name:     "never connected, token expired",
			objs:     []client.Object{never, bootstrapToken(never, "abc123", -10*time.Minute, false), hubInfo, live},
			wantCode: exitProblem,
			want: map[string]want{
				CheckTunnel:     {verdict: VerdictProblem, next: []string{"no usable bootstrap token", fixedReissue}},
				CheckEnrollment: {verdict: VerdictProblem, summary: []string{"token abc123 expired 2026-11-22T11:50:00Z (10m ago) unused", "no way to enroll"}, next: []string{fixedReissue}},
			},
		},
		{
			name:     "never connected, no token left",
			objs:     []client.Object{never, hubInfo, live},
			wantCode: exitProblem,
			want: map[string]want{
				CheckTunnel:     {verdict: VerdictProblem, next: []string{fixedReissue}},
				CheckEnrollment: {verdict: VerdictProblem, summary: []string{"no bootstrap token outstanding: the agent has no way to enroll"}},
			},
		},
		{
			name:     "never connected, token spent",
			objs:     []client.Object{never, bootstrapToken(never, "abc123", 10*time.Minute, true), hubInfo, live},
			wantCode: exitProblem,
			want: map[string]want{
				CheckTunnel:     {verdict: VerdictProblem, next: []string{"the agent enrolled (its token is spent) but no tunnel came up", testHubURL}},
				CheckEnrollment: {verdict: VerdictOK, summary: []string{"token abc123 spent"}},
			},
		},
		{
			name: "a token of an earlier cluster of the name is not this one's",
			objs: []client.Object{never, bootstrapToken(newCluster("edge-1", 5*time.Hour, func(c *v1alpha1.Cluster) { c.UID = "earlier" }), "old123", 30*time.Minute, false), hubInfo, live},
			want: map[string]want{
				CheckEnrollment: {verdict: VerdictProblem, summary: []string{"no bootstrap token outstanding"}},
			},
			wantCode: exitProblem,
		},
		{
			name:     "disconnected",
			objs:     []client.Object{disconnectedCluster("edge-1"), replica("hub-0", time.Second), hubInfo},
			wantCode: exitProblem,
			want: map[string]want{
				CheckTunnel: {verdict: VerdictProblem,
					summary: []string{"disconnected since 2026-11-22T11:40:00Z (20m ago); last disconnect: keepalive_timeout; last reached the member 2026-11-22T11:39:00Z (21m ago)"},
					next:    []string{"pings went unanswered", "can the site reach " + testHubURL, agentLogs}},
				CheckReadiness:   {absent: true},
				CheckLatency:     {absent: true},
				CheckRefusals:    {verdict: VerdictOK},
				CheckEnrollment:  {verdict: VerdictOK},
				CheckHubReplicas: {verdict: VerdictOK},
			},
		},
		{
			name: "disconnected, no tunnel record: the condition says since when",
			objs: []client.Object{newCluster("edge-1", 72*time.Hour,
				withCondition(v1alpha1.ClusterTunnelConnected, metav1.ConditionFalse),
				withStatus("v0.3.0", "v1.36.3", time.Hour)), live, hubInfo},
			wantCode: exitProblem,
			want: map[string]want{
				CheckTunnel: {verdict: VerdictProblem, summary: []string{"disconnected since 2026-11-22T12:00:00Z (0s ago); last reached the member 2026-11-22T11:00:00Z (60m ago)"},
					next: []string{"is the agent running at the site, and can it reach " + testHubURL, "HTTPS_PROXY"}},
				CheckRefusals:    {absent: true},
				CheckStability:   {absent: true},
				CheckHubReplicas: {verdict: VerdictOK, summary: []string{"edge-1 on hub-0"}},
			},
		},
		{
			name:     "refused: certificate expired",
			objs:     []client.Object{disconnectedCluster("edge-1", refusedAt(time.Minute, "x509: certificate has expired or is not yet valid: current time 2026-11-22T11:59:00Z is after 2026-11-22T11:30:00Z")), live, hubInfo},
			wantCode: exitProblem,
			want: map[string]want{
				CheckTunnel:   {verdict: VerdictProblem, next: []string{"the hub refuses this cluster's agent: see refusals"}},
				CheckRefusals: {verdict: VerdictProblem, summary: []string{"the hub refused the agent 2026-11-22T11:59:00Z (60s ago): x509"}, next: []string{"re-enroll with `" + fixedReissue + "`"}},
			},
		},
		{
			name:     "refused: certificate not yet valid",
			objs:     []client.Object{disconnectedCluster("edge-1", refusedAt(time.Minute, "x509: certificate has expired or is not yet valid: current time 2026-11-22T11:59:00Z is before 2026-11-22T12:30:00Z")), live, hubInfo},
			wantCode: exitProblem,
			want:     map[string]want{CheckRefusals: {verdict: VerdictProblem, next: []string{"NTP"}}},
		},
		{
			name:     "refused: revoked",
			objs:     []client.Object{disconnectedCluster("edge-1", refusedAt(time.Minute, `agent may not serve this cluster: certificate was issued to an earlier cluster "edge-1" and is revoked`)), live, hubInfo},
			wantCode: exitProblem,
			want:     map[string]want{CheckRefusals: {verdict: VerdictProblem, next: []string{"kubectl -n backhaul-system delete secret backhaul-agent", fixedReissue}}},
		},
		{
			name:     "refused: certificate of another cluster",
			objs:     []client.Object{disconnectedCluster("edge-1", refusedAt(time.Minute, `agent may not serve this cluster: certificate is for cluster "edge-2", not "edge-1"`)), live, hubInfo},
			wantCode: exitProblem,
			want:     map[string]want{CheckRefusals: {verdict: VerdictProblem, next: []string{"ConfigMap backhaul-system/backhaul-agent"}}},
		},
		{
			name:     "refused: bootstrap token",
			objs:     []client.Object{disconnectedCluster("edge-1", refusedAt(time.Minute, "bootstrap token is invalid, expired or already used")), live, hubInfo},
			wantCode: exitProblem,
			want:     map[string]want{CheckRefusals: {verdict: VerdictProblem, next: []string{"wrong, expired or spent", fixedReissue}}},
		},
		{
			name:     "refused: protocol version",
			objs:     []client.Object{disconnectedCluster("edge-1", refusedAt(time.Minute, `tunnel: protocol version mismatch: agent offered subprotocol "backhaul.io/v0"`)), live, hubInfo},
			wantCode: exitProblem,
			want:     map[string]want{CheckRefusals: {verdict: VerdictProblem, next: []string{"set image deploy/backhaul-agent agent=backhaul-agent:" + version.Version}}},
		},
		{
			name:     "refused: busy",
			objs:     []client.Object{disconnectedCluster("edge-1", refusedAt(time.Minute, "too many agents connecting at once; retry later")), live, hubInfo},
			wantCode: exitProblem,
			want:     map[string]want{CheckRefusals: {verdict: VerdictProblem, next: []string{"retries by itself", "grep edge-1"}}},
		},
		{
			name:     "refused: node address",
			objs:     []client.Object{disconnectedCluster("edge-1", refusedAt(time.Minute, "node address 10.9.0.5 is outside the cluster's nodeCIDRs [10.0.0.0/16]")), live, hubInfo},
			wantCode: exitProblem,
			want:     map[string]want{CheckRefusals: {verdict: VerdictProblem, next: []string{"spec.nodeCIDRs"}}},
		},
		{
			name:     "refused: a reason it does not know",
			objs:     []client.Object{disconnectedCluster("edge-1", refusedAt(time.Minute, "the moon is in the wrong phase")), live, hubInfo},
			wantCode: exitProblem,
			want:     map[string]want{CheckRefusals: {verdict: VerdictProblem, next: []string{"kubectl -n backhaul-system logs -l app.kubernetes.io/name=backhaul-hub --tail=500 | grep edge-1"}}},
		},
		{
			name: "a refusal before the last session is history",
			objs: []client.Object{disconnectedCluster("edge-1", refusedAt(3*time.Hour, "bootstrap token is invalid, expired or already used")), live, hubInfo},
			// Still exit 2: the cluster is disconnected.
			wantCode: exitProblem,
			want: map[string]want{
				CheckRefusals: {verdict: VerdictOK, summary: []string{"before the latest session"}},
				CheckTunnel:   {verdict: VerdictProblem, next: []string{agentLogs}},
			},
		},
		{
			name: "an agent refused while another is connected",
			objs: []client.Object{connectedCluster("edge-1", refusedAt(time.Minute, `agent may not serve this cluster: certificate is for cluster "edge-2", not "edge-1"`)), live, hubInfo},
			want: map[string]want{CheckRefusals: {verdict: VerdictWarning, summary: []string{"while another is connected"}, next: []string{"two sites share"}}},
		},
		{
			name: "connected after a refusal",
			objs: []client.Object{connectedCluster("edge-1", refusedAt(3*time.Hour, "bootstrap token is invalid, expired or already used")), live, hubInfo},
			want: map[string]want{CheckRefusals: {verdict: VerdictOK, summary: []string{"last refusal 2026-11-22T09:00:00Z (3h ago), before the latest session"}}},
		},
		{
			name:     "member API server not ready",
			objs:     []client.Object{connectedCluster("edge-1", withReady(metav1.ConditionFalse, "ReadyzFailed", "500 Internal Server Error: [-]etcd failed")), live, hubInfo},
			wantCode: exitProblem,
			want: map[string]want{CheckReadiness: {verdict: VerdictProblem, summary: []string{"the tunnel is up but the member's API server is not ready: 500 Internal Server Error: [-]etcd failed"},
				next: []string{"/readyz?verbose", "context edge-1"}}},
		},
		{
			name: "not probed yet",
			objs: []client.Object{connectedCluster("edge-1", withReady(metav1.ConditionFalse, "NotProbedYet", "the member has not been probed through the tunnel yet")), live, hubInfo},
			want: map[string]want{CheckReadiness: {verdict: VerdictWarning, next: []string{"again in a moment"}}},
		},
		{
			name: "stale status",
			objs: []client.Object{connectedCluster("edge-1", withStatus(version.Version, "v1.36.3", 12*time.Minute, "hub-0")), live, hubInfo},
			want: map[string]want{CheckReadiness: {verdict: VerdictWarning, summary: []string{"stale"}, next: []string{"get lease backhaul-hub"}}},
		},
		{
			name: "a lossy link: p99 far above the average",
			objs: []client.Object{connectedCluster("edge-1", withTunnel(func(t *v1alpha1.TunnelStatus) {
				t.RTT, t.RTTP99 = dur(10*time.Millisecond), dur(300*time.Millisecond)
			})), live, hubInfo},
			want: map[string]want{CheckLatency: {verdict: VerdictWarning, summary: []string{"p99 300ms", "30× the average, a lossy or congested link"}, next: []string{"mtr hub.example.com"}}},
		},
		{
			name: "a jittery but fast link is fine",
			objs: []client.Object{connectedCluster("edge-1", withTunnel(func(t *v1alpha1.TunnelStatus) {
				t.RTT, t.RTTP99 = dur(time.Millisecond), dur(20*time.Millisecond)
			})), live, hubInfo},
			want: map[string]want{CheckLatency: {verdict: VerdictOK}},
		},
		{
			name: "a far site",
			objs: []client.Object{connectedCluster("edge-1", withTunnel(func(t *v1alpha1.TunnelStatus) {
				t.RTT, t.RTTP99 = dur(310*time.Millisecond), dur(380*time.Millisecond)
			})), live, hubInfo},
			want: map[string]want{CheckLatency: {verdict: VerdictWarning, summary: []string{"RTT 310ms"}, next: []string{"nearer the site"}}},
		},
		{
			name: "connected, not measured yet",
			objs: []client.Object{connectedCluster("edge-1", withTunnel(func(t *v1alpha1.TunnelStatus) { t.RTT, t.RTTP99 = nil, nil })), live, hubInfo},
			want: map[string]want{CheckLatency: {verdict: VerdictOK, summary: []string{"no round trip measured yet"}}},
		},
		{
			name: "a hub that records no tunnel health",
			objs: []client.Object{connectedCluster("edge-1", func(c *v1alpha1.Cluster) { c.Status.Tunnel = nil }), live, hubInfo},
			want: map[string]want{
				CheckLatency:     {verdict: VerdictOK, summary: []string{"recorded no tunnel health"}},
				CheckRefusals:    {absent: true},
				CheckStability:   {absent: true},
				CheckCertificate: {absent: true},
				CheckClock:       {absent: true},
			},
		},
		{
			name: "flapping",
			objs: []client.Object{connectedCluster("edge-1", withTunnel(func(t *v1alpha1.TunnelStatus) {
				t.Reconnects, t.Flapping = 14, true
				t.LastDisconnectTime, t.LastDisconnectReason = ago(3*time.Minute), "websocket: close 1006 (abnormal closure)"
			})), live, hubInfo},
			wantCode: exitProblem,
			want: map[string]want{CheckStability: {verdict: VerdictProblem,
				summary: []string{"flapping: 14 reconnects in the last 60m; last disconnect 2026-11-22T11:57:00Z (3m ago): websocket: close 1006"},
				next:    []string{"idle timeout", "--keepalive-interval", "RESTARTS"}}},
		},
		{
			name: "a few reconnects",
			objs: []client.Object{connectedCluster("edge-1", withTunnel(func(t *v1alpha1.TunnelStatus) { t.Reconnects = 3 })), live, hubInfo},
			want: map[string]want{CheckStability: {verdict: VerdictOK, summary: []string{"3 reconnects in the last 60m"}}},
		},
		{
			name: "certificate expiring",
			objs: []client.Object{connectedCluster("edge-1", withTunnel(func(t *v1alpha1.TunnelStatus) { t.CertificateNotAfter = ago(-2 * 24 * time.Hour) })), live, hubInfo},
			want: map[string]want{CheckCertificate: {verdict: VerdictWarning, summary: []string{"expires 2026-11-24T12:00:00Z (in 2d)"}, next: []string{"failed renewals", fixedReissue}}},
		},
		{
			name: "certificate expiring, outside a shorter --cert-warning",
			objs: []client.Object{connectedCluster("edge-1", withTunnel(func(t *v1alpha1.TunnelStatus) { t.CertificateNotAfter = ago(-2 * 24 * time.Hour) })), live, hubInfo},
			args: []string{"--cert-warning", "24h"},
			want: map[string]want{CheckCertificate: {verdict: VerdictOK, summary: []string{"valid until"}}},
		},
		{
			name:     "certificate expired while disconnected",
			objs:     []client.Object{disconnectedCluster("edge-1", withTunnel(func(t *v1alpha1.TunnelStatus) { t.CertificateNotAfter = ago(time.Hour) })), live, hubInfo},
			wantCode: exitProblem,
			want:     map[string]want{CheckCertificate: {verdict: VerdictProblem, summary: []string{"expired 2026-11-22T11:00:00Z (60m ago)"}, next: []string{"re-enroll", fixedReissue}}},
		},
		{
			name: "token-authenticated agent",
			objs: []client.Object{connectedCluster("edge-1", withTunnel(func(t *v1alpha1.TunnelStatus) { t.CertificateNotAfter = nil })), live, hubInfo},
			want: map[string]want{CheckCertificate: {verdict: VerdictOK, summary: []string{"with a token"}}},
		},
		{
			name: "clock ahead",
			objs: []client.Object{connectedCluster("edge-1", withTunnel(func(t *v1alpha1.TunnelStatus) { t.ClockSkew = dur(2 * time.Minute) })), live, hubInfo},
			want: map[string]want{CheckClock: {verdict: VerdictWarning, summary: []string{"2m0s ahead of"}, next: []string{"NTP", "not yet valid"}}},
		},
		{
			name:     "clock far behind",
			objs:     []client.Object{connectedCluster("edge-1", withTunnel(func(t *v1alpha1.TunnelStatus) { t.ClockSkew = dur(-7 * time.Minute) })), live, hubInfo},
			wantCode: exitProblem,
			want:     map[string]want{CheckClock: {verdict: VerdictProblem, summary: []string{"7m0s behind the hub's"}, next: []string{"NTP"}}},
		},
		{
			name: "agents of two versions",
			objs: []client.Object{connectedCluster("edge-1"), live, hubInfo, replica("hub-1", time.Second, func() v1alpha1.HeldCluster {
				h := holding("edge-1")
				h.AgentVersion = "v0.0.1"
				return h
			}())},
			want: map[string]want{CheckAgentVersion: {verdict: VerdictWarning, summary: []string{"different versions: " + version.Version + " (hub-0), v0.0.1 (hub-1)"}, next: []string{"rollout"}}},
		},
		{
			name:     "no hub replica serving",
			objs:     []client.Object{disconnectedCluster("edge-1"), replica("hub-0", time.Minute), replica("hub-1", time.Hour), hubInfo},
			wantCode: exitProblem,
			want: map[string]want{CheckHubReplicas: {verdict: VerdictProblem, summary: []string{"no hub replica is serving", "(2 replicas with an expired lease)"},
				next: []string{"get pods -l app.kubernetes.io/name=backhaul-hub"}}},
		},
		{
			name:     "no hub replica at all",
			objs:     []client.Object{disconnectedCluster("edge-1"), hubInfo},
			wantCode: exitProblem,
			want:     map[string]want{CheckHubReplicas: {verdict: VerdictProblem, summary: []string{"no HubReplica in backhaul-system renewed its lease"}}},
		},
		{
			name: "every replica draining",
			objs: []client.Object{connectedCluster("edge-1"), func() client.Object {
				r := replica("hub-0", time.Second, holding("edge-1"))
				r.Status.Draining = true
				return r
			}(), hubInfo},
			want: map[string]want{CheckHubReplicas: {verdict: VerdictWarning, summary: []string{"hub-0 (draining)", "all are draining"}}},
		},
		{
			name: "status says connected, no replica holds it",
			objs: []client.Object{connectedCluster("edge-1"), replica("hub-0", time.Second), hubInfo},
			want: map[string]want{CheckHubReplicas: {verdict: VerdictWarning, summary: []string{"none holds a session of edge-1, yet the Cluster status says connected"}, next: []string{"lease backhaul-hub"}}},
		},
		{
			name:     "status says disconnected, a replica holds it",
			objs:     []client.Object{disconnectedCluster("edge-1"), live, hubInfo},
			wantCode: exitProblem,
			want:     map[string]want{CheckHubReplicas: {verdict: VerdictWarning, summary: []string{"yet the Cluster status says disconnected"}}},
		},
		{
			name:     "hub address unknown",
			objs:     []client.Object{never, bootstrapToken(never, "abc123", 40*time.Minute, false), live},
			wantCode: exitProblem,
			want: map[string]want{
				CheckHubEndpoint: {verdict: VerdictWarning, summary: []string{"hub address unknown"}, next: []string{"--advertise-url"}},
				CheckTunnel:      {verdict: VerdictProblem, next: []string{"reaches the hub's URL"}},
			},
		},
		{
			name:     "hub CA expired",
			objs:     []client.Object{connectedCluster("edge-1"), live, hubInfoConfigMap(testHubURL, testCAUntil(t, testNow.Add(-time.Hour)))},
			wantCode: exitProblem,
			want:     map[string]want{CheckHubEndpoint: {verdict: VerdictProblem, summary: []string{"its CA expired 2026-11-22T11:00:00Z"}, next: []string{"Secret backhaul-system/backhaul-ca"}}},
		},
		{
			name: "hub CA expiring",
			objs: []client.Object{connectedCluster("edge-1"), live, hubInfoConfigMap(testHubURL, testCAUntil(t, testNow.Add(10*24*time.Hour)))},
			want: map[string]want{CheckHubEndpoint: {verdict: VerdictWarning, summary: []string{"its CA expires 2026-12-02T12:00:00Z (in 10d)"}}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"diagnose", "edge-1", "-o", "json", "--probe-hub=false"}, tc.args...)
			res := run(t, newFakeClient(t, tc.objs...), args...)
			require.Equal(t, tc.wantCode, res.code, "stdout:\n%s\nstderr:\n%s", res.out, res.err)
			require.Empty(t, res.err)
			d := decodeDiagnosis(t, res.out)
			for check, w := range tc.want {
				fd, ok := finding(d, check)
				if w.absent {
					assert.False(t, ok, "%s: want no finding, got %+v", check, fd)
					continue
				}
				if !assert.True(t, ok, "no %s finding in %+v", check, d.Findings) {
					continue
				}
				if w.verdict != "" {
					assert.Equal(t, w.verdict, fd.Verdict, "%s: %s", check, fd.Summary)
				}
				for _, s := range w.summary {
					assert.Contains(t, fd.Summary, s, check)
				}
				for _, s := range w.next {
					assert.Contains(t, fd.Next, s, check)
				}
				if fd.Verdict == VerdictOK {
					assert.Empty(t, fd.Next, "%s: an ok finding needs no next step", check)
				} else {
					assert.NotEmpty(t, fd.Next, "%s: every warning and problem says what to check next", check)
				}
			}
			if tc.name == "healthy" {
				for _, fd := range d.Findings {
					assert.Equal(t, VerdictOK, fd.Verdict, "%s: %s", fd.Check, fd.Summary)
				}
			}
		})
	}
}

func TestAgentVersionSkew(t *testing.T) {
	tests := []struct {
		agent, ref string
		want       Verdict
		summary    string
	}{
		{agent: "v0.4.0", ref: "v0.4.0", want: VerdictOK, summary: "agent v0.4.0, backhaulctl v0.4.0 (the same)"},
		{agent: "v0.4.1", ref: "v0.4.0-12-gabcdef0", want: VerdictOK, summary: "agent v0.4.1, backhaulctl v0.4.0-12-gabcdef0"},
		{agent: "v0.3.9", ref: "v0.4.0", want: VerdictOK},
		{agent: "v0.2.0", ref: "v0.4.0", want: VerdictWarning, summary: "more than one minor release apart"},
		{agent: "v0.5.0", ref: "v0.4.0", want: VerdictWarning},
		{agent: "v1.4.0", ref: "v0.4.0", want: VerdictWarning},
		{agent: "dev", ref: "v0.4.0", want: VerdictOK, summary: "(not comparable)"},
	}
	for _, tc := range tests {
		t.Run(tc.agent+" vs "+tc.ref, func(t *testing.T) {
			f := &facts{name: "edge-1", now: testNow, refVersion: tc.ref, refVersionFrom: "backhaulctl",
				cluster: newCluster("edge-1", time.Hour, withStatus(tc.agent, "v1.36.3", time.Second))}
			fd, ok := f.agentVersion()
			require.True(t, ok)
			assert.Equal(t, tc.want, fd.Verdict, fd.Summary)
			assert.Contains(t, fd.Summary, tc.summary)
			if tc.want == VerdictWarning {
				assert.Contains(t, fd.Next, "set image deploy/backhaul-agent agent=backhaul-agent:"+tc.ref)
			}
		})
	}
}

func TestDisconnectHints(t *testing.T) {
	tests := []struct{ reason, next string }{
		{disconnectAgentClosed, "the agent said goodbye"},
		{disconnectKeepalive, "pings went unanswered"},
		{disconnectLost, "OOMKilled"},
		{disconnectExpired, "see certificate"},
		{disconnectRevoked, "delete secret backhaul-agent"},
		{disconnectDrained, "see hub-replicas"},
		{disconnectShutdown, "see hub-replicas"},
		{"replaced", "is the agent running at the site"},
		{"", "is the agent running at the site"},
	}
	for _, tc := range tests {
		t.Run(tc.reason, func(t *testing.T) {
			c := disconnectedCluster("edge-1", withTunnel(func(ts *v1alpha1.TunnelStatus) { ts.LastDisconnectReason = tc.reason }))
			f := &facts{name: "edge-1", now: testNow, cluster: c}
			fd, ok := f.tunnelCheck()
			require.True(t, ok)
			assert.Equal(t, VerdictProblem, fd.Verdict)
			assert.Contains(t, fd.Next, tc.next)
		})
	}
}

// TestRefusalHints: the hub's own phrases (hub/session's Refusal
// constants, copied: backhaulctl imports no hub package) each find their
// hint.
func TestRefusalHints(t *testing.T) {
	tests := []struct{ reason, next string }{
		{"certificate expired", "re-enroll"},
		{"certificate not yet valid (do the hub replicas' clocks disagree?)", "on the hub's nodes"},
		{"certificate revoked: it was issued to an earlier cluster of this name", "delete secret backhaul-agent"},
		{"cluster not registered (removed?)", "`backhaulctl cluster add edge-1`, then onboard"},
		{"unsupported tunnel protocol version", "set image"},
		{"node addresses outside the cluster's spec.nodeCIDRs", "spec.nodeCIDRs"},
		{"too many agents connecting at once (--max-handshakes); the agent retries later", "retries by itself"},
		{"the agent's certificate is for cluster edge-2 but it asked to serve another", "names another cluster"},
	}
	for _, tc := range tests {
		t.Run(tc.reason, func(t *testing.T) {
			f := &facts{name: "edge-1", now: testNow, refVersion: "v0.4.0"}
			assert.Contains(t, f.refusalHint(tc.reason), tc.next)
		})
	}
}

func TestHubVersionFromLiveReplicas(t *testing.T) {
	withVersion := func(r *v1alpha1.HubReplica, v string, created time.Duration) v1alpha1.HubReplica {
		r.Status.Version = v
		r.CreationTimestamp = metav1.NewTime(testNow.Add(-created))
		return *r
	}
	tests := []struct {
		name     string
		replicas []v1alpha1.HubReplica
		want     string
		wantFrom string
	}{
		{name: "no replica says", replicas: []v1alpha1.HubReplica{*replica("hub-0", time.Second)}},
		{name: "a live replica", replicas: []v1alpha1.HubReplica{withVersion(replica("hub-0", time.Second), "v0.9.0", time.Hour)},
			want: "v0.9.0", wantFrom: "hub hub-0"},
		{name: "the newest live replica wins during a rollout", replicas: []v1alpha1.HubReplica{
			withVersion(replica("hub-old", time.Second), "v0.9.0", time.Hour),
			withVersion(replica("hub-new", time.Second), "v1.0.0", time.Minute),
		}, want: "v1.0.0", wantFrom: "hub hub-new"},
		{name: "an expired replica does not count", replicas: []v1alpha1.HubReplica{
			withVersion(replica("hub-gone", time.Hour), "v0.1.0", time.Minute),
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, from := hubVersion(tc.replicas, testNow)
			assert.Equal(t, tc.want, v)
			assert.Equal(t, tc.wantFrom, from)
		})
	}
}
