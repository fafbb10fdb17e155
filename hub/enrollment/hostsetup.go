package enrollment

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"slices"
	"time"

	"backhaul.io/backhaul/pkg/identity"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/keyutil"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
)

// Names of the hub's own objects in its namespace of the host cluster.
const (
	CASecretName      = "backhaul-ca"
	ServingSecretName = "backhaul-hub-tls"

	servingValidity = 365 * 24 * time.Hour
	// servingRenewBefore: a hub that starts with less left than this
	// issues itself a new certificate.
	servingRenewBefore = 30 * 24 * time.Hour
)

// EnsureCA loads the CA from Secret ns/name, creating it on first start.
// Two replicas starting at once both try; the loser reads the winner's.
func EnsureCA(ctx context.Context, c client.Client, ns, name string) (*CA, error) {
	var s corev1.Secret
	err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &s)
	if err == nil {
		return ParseCA(s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey])
	}
	if !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("reading CA secret %s/%s: %w", ns, name, err)
	}
	ca, err := NewCA("backhaul-ca")
	if err != nil {
		return nil, err
	}
	key, err := ca.KeyPEM()
	if err != nil {
		return nil, err
	}
	s = corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: ca.PEM(), corev1.TLSPrivateKeyKey: key},
	}
	if err := c.Create(ctx, &s); err != nil {
		if apierrors.IsAlreadyExists(err) {
			return EnsureCA(ctx, c, ns, name)
		}
		return nil, fmt.Errorf("creating CA secret %s/%s: %w", ns, name, err)
	}
	return ca, nil
}

// EnsureServingCert returns the hub's serving certificate from Secret
// ns/name, issuing one from ca for hosts when the Secret is missing, was
// signed by another CA, lacks a host, or expires within 30 days.
func EnsureServingCert(ctx context.Context, c client.Client, ns, name string, ca *CA, hosts []string) (tls.Certificate, error) {
	var s corev1.Secret
	err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &s)
	if err != nil && !apierrors.IsNotFound(err) {
		return tls.Certificate{}, fmt.Errorf("reading serving secret %s/%s: %w", ns, name, err)
	}
	if err == nil {
		if cert, ok := usableServing(s.Data, ca, hosts); ok {
			return cert, nil
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	certPEM, err := ca.SignServing(key.Public(), hosts, servingValidity)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, err := keyutil.MarshalPrivateKeyToPEM(key)
	if err != nil {
		return tls.Certificate{}, err
	}
	s.Namespace, s.Name = ns, name
	if err := createOrUpdate(ctx, c, &s, func() error {
		s.Type = corev1.SecretTypeTLS
		s.Data = map[string][]byte{corev1.TLSCertKey: certPEM, corev1.TLSPrivateKeyKey: keyPEM}
		return nil
	}); err != nil {
		return tls.Certificate{}, fmt.Errorf("writing serving secret %s/%s: %w", ns, name, err)
	}
	return tls.X509KeyPair(certPEM, keyPEM)
}

func usableServing(data map[string][]byte, ca *CA, hosts []string) (tls.Certificate, bool) {
	cert, err := tls.X509KeyPair(data[corev1.TLSCertKey], data[corev1.TLSPrivateKeyKey])
	if err != nil {
		return cert, false
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil || time.Until(leaf.NotAfter) < servingRenewBefore {
		return cert, false
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool()}); err != nil {
		return cert, false
	}
	for _, h := range hosts {
		if leaf.VerifyHostname(h) != nil {
			return cert, false
		}
	}
	return cert, true
}

// PublishHubInfo writes the hub-info ConfigMap that backhaulctl reads into
// onboarding commands: the URL agents dial and the CA that signed the hub's
// serving certificate.
func PublishHubInfo(ctx context.Context, c client.Client, ns, url string, caPEM []byte) error {
	cm := corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: identity.HubInfoConfigMap}}
	err := createOrUpdate(ctx, c, &cm, func() error {
		cm.Data = map[string]string{identity.HubInfoKeyURL: url, identity.HubInfoKeyCA: string(caPEM)}
		return nil
	})
	if err != nil {
		return fmt.Errorf("publishing %s/%s: %w", ns, identity.HubInfoConfigMap, err)
	}
	return nil
}

// ServingHosts are the names the hub's own serving certificate covers.
func ServingHosts(ns string, extra []string) []string {
	hosts := []string{"backhaul-hub", "backhaul-hub." + ns, "backhaul-hub." + ns + ".svc", "localhost", "127.0.0.1"}
	for _, h := range extra {
		if h != "" && !slices.Contains(hosts, h) {
			hosts = append(hosts, h)
		}
	}
	return hosts
}

// createOrUpdate is controllerutil.CreateOrUpdate for objects every replica
// writes at start: replicas starting together race to create them, and the
// losers (AlreadyExists) or a concurrent update (Conflict) simply try
// again on what the winner wrote.
func createOrUpdate(ctx context.Context, c client.Client, obj client.Object, mutate func() error) error {
	return retry.OnError(retry.DefaultRetry, func(err error) bool {
		return apierrors.IsAlreadyExists(err) || apierrors.IsConflict(err)
	}, func() error {
		_, err := controllerutil.CreateOrUpdate(ctx, c, obj, mutate)
		return err
	})
}
