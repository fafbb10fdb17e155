package ctl

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
	apischeme "backhaul.io/backhaul/pkg/apis/scheme"
	"backhaul.io/backhaul/pkg/identity"
)

// testNow is the fixed clock of every test run.
var testNow = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

func newFakeClient(t *testing.T, objs ...client.Object) client.WithWatch {
	t.Helper()
	s, err := apischeme.New()
	require.NoError(t, err)
	return fake.NewClientBuilder().
		WithScheme(s).
		WithObjects(objs...).
		WithStatusSubresource(&v1alpha1.Cluster{}).
		Build()
}

type result struct {
	out, err string
	code     int
}

// run executes backhaulctl in-process against c. Only the kubeconfig
// command reads a kubeconfig file; its tests pass --kubeconfig.
func run(t *testing.T, c client.Client, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	env := Env{
		Out: &out, ErrOut: &errOut,
		NewClient:    func(clientcmd.ClientConfig) (client.Client, error) { return c, nil },
		Now:          func() time.Time { return testNow },
		PollInterval: time.Millisecond,
	}
	code := Run(context.Background(), args, env)
	return result{out: out.String(), err: errOut.String(), code: code}
}

// testCA returns a self-signed CA certificate in PEM.
func testCA(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "backhaul-hub-ca"},
		NotBefore:             testNow.Add(-time.Hour),
		NotAfter:              testNow.Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, data, 0o600))
	return p
}

func hubInfoConfigMap(url string, ca []byte) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: identity.DefaultNamespace, Name: identity.HubInfoConfigMap},
		Data:       map[string]string{identity.HubInfoKeyURL: url, identity.HubInfoKeyCA: string(ca)},
	}
}

type clusterOpt func(*v1alpha1.Cluster)

func withLabels(l map[string]string) clusterOpt {
	return func(c *v1alpha1.Cluster) { c.Labels = l }
}

func withCondition(typ string, status metav1.ConditionStatus) clusterOpt {
	return func(c *v1alpha1.Cluster) {
		c.Status.Conditions = append(c.Status.Conditions, metav1.Condition{
			Type: typ, Status: status, Reason: "Test", LastTransitionTime: metav1.NewTime(testNow),
		})
	}
}

func withStatus(agent, kube string, heartbeat time.Duration, replicas ...string) clusterOpt {
	return func(c *v1alpha1.Cluster) {
		c.Status.AgentVersion, c.Status.KubernetesVersion = agent, kube
		t := metav1.NewTime(testNow.Add(-heartbeat))
		c.Status.LastHeartbeatTime = &t
		c.Status.HubReplicas = replicas
		c.Status.Agents = int32(len(replicas))
	}
}

func newCluster(name string, age time.Duration, opts ...clusterOpt) *v1alpha1.Cluster {
	c := &v1alpha1.Cluster{ObjectMeta: metav1.ObjectMeta{
		Name:              name,
		UID:               k8stypes.UID("uid-" + name),
		CreationTimestamp: metav1.NewTime(testNow.Add(-age)),
	}}
	for _, o := range opts {
		o(c)
	}
	return c
}
