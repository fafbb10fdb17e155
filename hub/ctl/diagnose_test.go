package ctl

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/yaml"

	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
	"backhaul.io/backhaul/pkg/version"
)

func decodeDiagnosis(t *testing.T, out string) Diagnosis {
	t.Helper()
	var d Diagnosis
	require.NoError(t, json.Unmarshal([]byte(out), &d), out)
	return d
}

func finding(d Diagnosis, check string) (Finding, bool) {
	for _, fd := range d.Findings {
		if fd.Check == check {
			return fd, true
		}
	}
	return Finding{}, false
}

// testPKI returns a CA valid until caUntil, in PEM, and a serving
// certificate for 127.0.0.1 it signed, valid until leafUntil.
func testPKI(t *testing.T, caUntil, leafUntil time.Time) ([]byte, tls.Certificate) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "backhaul-hub-ca"},
		NotBefore: testNow.Add(-24 * time.Hour), NotAfter: caUntil,
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	ca, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "backhaul-hub"},
		NotBefore: testNow.Add(-time.Hour), NotAfter: leafUntil,
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, ca, &key.PublicKey, caKey)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: key}
}

func testCAUntil(t *testing.T, until time.Time) []byte {
	ca, _ := testPKI(t, until, until)
	return ca
}

// hubServer is a TLS listener serving cert, as the hub's public one.
func hubServer(t *testing.T, cert tls.Certificate) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return "wss://" + srv.Listener.Addr().String()
}

// TestDiagnoseReport pins the report people read.
func TestDiagnoseReport(t *testing.T) {
	c := disconnectedCluster("edge-1", refusedAt(time.Minute,
		"x509: certificate has expired or is not yet valid: current time 2026-11-22T11:59:00Z is after 2026-11-22T11:30:00Z"),
		withTunnel(func(t *v1alpha1.TunnelStatus) { t.CertificateNotAfter = ago(30 * time.Minute) }))
	objs := []client.Object{c, replica("hub-0", time.Second), replica("hub-1", 2*time.Second),
		hubInfoConfigMap(testHubURL, testCAUntil(t, testNow.Add(3650*24*time.Hour)))}
	res := run(t, newFakeClient(t, objs...), "diagnose", "edge-1", "--probe-hub=false")
	assert.Equal(t, exitProblem, res.code)
	assert.Empty(t, res.err)
	assert.Equal(t, `Cluster edge-1: 3 problems (checked 2026-11-22T12:00:00Z)

OK       registration   registered 2026-11-19T12:00:00Z (3d ago)
PROBLEM  tunnel         disconnected since 2026-11-22T11:40:00Z (20m ago); last disconnect: keepalive_timeout; last reached the member 2026-11-22T11:39:00Z (21m ago)
                        next: the hub refuses this cluster's agent: see refusals
PROBLEM  refusals       the hub refused the agent 2026-11-22T11:59:00Z (60s ago): x509: certificate has expired or is not yet valid: current time 2026-11-22T11:59:00Z is after 2026-11-22T11:30:00Z
                        next: the agent's certificate expired (offline past its renewal, or renewal failed): re-enroll with `+"`backhaulctl cluster add edge-1 --reissue-token`"+` and run the printed command at the site; the agent enrolls again with the new token
OK       stability      0 reconnects recently
PROBLEM  certificate    the agent's certificate expired 2026-11-22T11:30:00Z (30m ago)
                        next: re-enroll: `+"`backhaulctl cluster add edge-1 --reissue-token`"+`, run the printed command at the site; the agent enrolls again with the new token
OK       agent-version  agent `+version.Version+`, backhaulctl `+version.Version+` (the same)
OK       enrollment     no bootstrap token outstanding
OK       hub-replicas   2 hub replicas serving: hub-0, hub-1; none holds a session of edge-1
OK       hub-endpoint   wss://hub.example.com:8443: CA valid until 2036-11-19T12:00:00Z (in 10y)
`, res.out)
}

func TestDiagnoseHealthyExitsZero(t *testing.T) {
	objs := []client.Object{connectedCluster("edge-1"), replica("hub-0", time.Second, holding("edge-1")),
		hubInfoConfigMap(testHubURL, testCAUntil(t, testNow.Add(3650*24*time.Hour)))}
	res := run(t, newFakeClient(t, objs...), "diagnose", "edge-1", "--probe-hub=false")
	assert.Equal(t, 0, res.code, res.out)
	assert.Contains(t, res.out, "Cluster edge-1: healthy (checked 2026-11-22T12:00:00Z)\n")
	assert.Contains(t, res.out, "OK       latency        RTT 12ms (moving average), p99 20ms over the last 60m\n")
	assert.NotContains(t, res.out, "next:")

	// A warning does not fail the run; the headline counts it.
	objs[0] = connectedCluster("edge-1", withTunnel(func(t *v1alpha1.TunnelStatus) { t.ClockSkew = dur(-90 * time.Second) }))
	res = run(t, newFakeClient(t, objs...), "diagnose", "edge-1", "--probe-hub=false")
	assert.Equal(t, 0, res.code, res.out)
	assert.Contains(t, res.out, "Cluster edge-1: healthy, 1 warning (checked")
	assert.Contains(t, res.out, "WARNING  clock          the agent's clock is 1m30s behind the hub's\n")
}

func TestDiagnoseOutputFormats(t *testing.T) {
	objs := []client.Object{disconnectedCluster("edge-1"), replica("hub-0", time.Second)}
	for _, format := range []string{"json", "yaml"} {
		t.Run(format, func(t *testing.T) {
			res := run(t, newFakeClient(t, objs...), "diagnose", "edge-1", "-o", format, "--probe-hub=false")
			assert.Equal(t, exitProblem, res.code, "a problem fails the run in every format")
			var d Diagnosis
			require.NoError(t, yaml.Unmarshal([]byte(res.out), &d), res.out)
			assert.Equal(t, "edge-1", d.Cluster)
			assert.Equal(t, VerdictProblem, d.Verdict)
			assert.True(t, d.Time.Equal(testNow))
			fd, ok := finding(d, CheckTunnel)
			require.True(t, ok)
			assert.Equal(t, VerdictProblem, fd.Verdict)
			assert.Contains(t, fd.Next, agentLogs)
		})
	}
}

func TestDiagnoseCommandLine(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{name: "no name", args: []string{"diagnose"}, wantErr: "error: backhaulctl diagnose requires a cluster name\n"},
		{name: "two names", args: []string{"diagnose", "a", "b"}, wantErr: "error: backhaulctl diagnose requires a cluster name\n"},
		{name: "bad name", args: []string{"diagnose", "Edge_1"}, wantErr: `error: cluster name "Edge_1": `},
		{name: "bad output", args: []string{"diagnose", "edge-1", "-o", "wide"}, wantErr: `error: --output "wide": want json or yaml`},
		{name: "negative window", args: []string{"diagnose", "edge-1", "--cert-warning", "-1h"}, wantErr: "error: --cert-warning -1h0m0s: must not be negative"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := run(t, newFakeClient(t), tc.args...)
			assert.Equal(t, 1, res.code)
			assert.Empty(t, res.out)
			assert.Contains(t, res.err, tc.wantErr)
		})
	}
}

// failingClient answers reads of one kind of list, or every Get, with err.
func failingClient(t *testing.T, objs []client.Object, funcs interceptor.Funcs) client.Client {
	return interceptor.NewClient(newFakeClient(t, objs...), funcs)
}

func TestDiagnoseHostErrors(t *testing.T) {
	forbidden := func(resource string) error {
		return apierrors.NewForbidden(schema.GroupResource{Resource: resource}, "", errForbiddenTest)
	}
	objs := []client.Object{connectedCluster("edge-1"), replica("hub-0", time.Second, holding("edge-1")),
		hubInfoConfigMap(testHubURL, testCAUntil(t, testNow.Add(3650*24*time.Hour)))}

	t.Run("the Cluster cannot be read", func(t *testing.T) {
		c := failingClient(t, objs, interceptor.Funcs{Get: func(context.Context, client.WithWatch, client.ObjectKey, client.Object, ...client.GetOption) error {
			return forbidden("clusters")
		}})
		res := run(t, c, "diagnose", "edge-1")
		assert.Equal(t, 1, res.code, "no diagnosis without the Cluster: that is not a finding about it")
		assert.Empty(t, res.out)
		assert.Contains(t, res.err, "Error from server (Forbidden)")
	})

	t.Run("secrets and replicas cannot be listed", func(t *testing.T) {
		c := failingClient(t, objs, interceptor.Funcs{List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			switch list.(type) {
			case *corev1.SecretList:
				return forbidden("secrets")
			case *v1alpha1.HubReplicaList:
				return forbidden("hubreplicas")
			}
			return c.List(ctx, list, opts...)
		}})
		res := run(t, c, "diagnose", "edge-1", "-o", "json", "--probe-hub=false")
		assert.Equal(t, 0, res.code, "what cannot be read is a warning, the rest stands")
		d := decodeDiagnosis(t, res.out)
		fd, _ := finding(d, CheckEnrollment)
		assert.Equal(t, VerdictWarning, fd.Verdict)
		assert.Contains(t, fd.Summary, "cannot read the bootstrap tokens in namespace backhaul-system")
		assert.Contains(t, fd.Next, "list on secrets")
		fd, _ = finding(d, CheckHubReplicas)
		assert.Equal(t, VerdictWarning, fd.Verdict)
		assert.Contains(t, fd.Next, "list on hubreplicas.backhaul.io")
		fd, _ = finding(d, CheckTunnel)
		assert.Equal(t, VerdictOK, fd.Verdict)
	})
}

var errForbiddenTest = &testError{"not allowed in this test"}

type testError struct{ s string }

func (e *testError) Error() string { return e.s }

// TestDiagnoseProbesHub shakes hands with a real TLS listener at the
// published address.
func TestDiagnoseProbesHub(t *testing.T) {
	far := testNow.Add(3650 * 24 * time.Hour)
	ca, good := testPKI(t, far, testNow.Add(300*24*time.Hour))
	otherCA, _ := testPKI(t, far, far)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closedURL := "wss://" + closed.Addr().String()
	require.NoError(t, closed.Close())

	tests := []struct {
		name    string
		url     string
		ca      []byte
		verdict Verdict
		summary string
		next    string
	}{
		{name: "ok", url: hubServer(t, good), ca: ca, verdict: VerdictOK,
			summary: "TLS handshake ok, serving certificate valid until 2027-09-18T12:00:00Z (in 300d)"},
		{name: "another CA signed it", url: hubServer(t, good), ca: otherCA, verdict: VerdictProblem,
			summary: "its serving certificate fails verification with the published CA", next: "Secret backhaul-system/backhaul-hub-tls"},
		{name: "unreachable", url: closedURL, ca: ca, verdict: VerdictWarning,
			summary: "not reachable from this machine", next: "load balancer"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			objs := []client.Object{connectedCluster("edge-1"), replica("hub-0", time.Second, holding("edge-1")), hubInfoConfigMap(tc.url, tc.ca)}
			res := run(t, newFakeClient(t, objs...), "diagnose", "edge-1", "-o", "json")
			d := decodeDiagnosis(t, res.out)
			fd, ok := finding(d, CheckHubEndpoint)
			require.True(t, ok)
			assert.Equal(t, tc.verdict, fd.Verdict, fd.Summary)
			assert.Contains(t, fd.Summary, tc.url+": ")
			assert.Contains(t, fd.Summary, tc.summary)
			assert.Contains(t, fd.Next, tc.next)
		})
	}

	t.Run("serving certificate expiring", func(t *testing.T) {
		ca, leaf := testPKI(t, far, testNow.Add(3*24*time.Hour))
		objs := []client.Object{connectedCluster("edge-1"), replica("hub-0", time.Second, holding("edge-1")), hubInfoConfigMap(hubServer(t, leaf), ca)}
		res := run(t, newFakeClient(t, objs...), "diagnose", "edge-1", "-o", "json")
		fd, _ := finding(decodeDiagnosis(t, res.out), CheckHubEndpoint)
		assert.Equal(t, VerdictWarning, fd.Verdict, fd.Summary)
		assert.Contains(t, fd.Summary, "its serving certificate expires 2026-11-25T12:00:00Z (in 3d)")
	})
}

func TestDiagnoseInHelp(t *testing.T) {
	res := run(t, newFakeClient(t), "--help")
	assert.Equal(t, 0, res.code)
	assert.Contains(t, res.out, "  diagnose ")
	res = run(t, newFakeClient(t), "diagnose", "--help")
	assert.Equal(t, 0, res.code)
	assert.Contains(t, res.out, "Exit status: 0 when nothing is a problem")
}
