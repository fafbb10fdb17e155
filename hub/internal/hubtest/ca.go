package hubtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"backhaul.io/backhaul/pkg/identity"
)

// CA is a throwaway certificate authority.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	Pool *x509.CertPool
	PEM  []byte
}

// NewCA returns a CA valid for an hour either side of now.
func NewCA(t *testing.T, name string) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{Cert: cert, Key: key, Pool: pool, PEM: CertPEM(der)}
}

var serial atomic.Int64

// Issue signs tmpl (serial, validity and key usage filled in) for a new key.
func (ca *CA) Issue(t *testing.T, tmpl *x509.Certificate) tls.Certificate {
	t.Helper()
	return ca.IssueUntil(t, tmpl, time.Now().Add(time.Hour))
}

// AgentCert is id's agent certificate, as the hub's enrollment issues
// it, valid until notAfter (x509 keeps whole seconds).
func (ca *CA) AgentCert(t *testing.T, id identity.AgentIdentity, notAfter time.Time) tls.Certificate {
	t.Helper()
	return ca.IssueUntil(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: id.CommonName(), Organization: []string{identity.AgentGroup}},
		URIs:        []*url.URL{id.URI()},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, notAfter)
}

// IssueUntil is Issue valid until notAfter.
func (ca *CA) IssueUntil(t *testing.T, tmpl *x509.Certificate, notAfter time.Time) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl.SerialNumber = big.NewInt(100 + serial.Add(1))
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = notAfter
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// ServerCert is valid for 127.0.0.1.
func (ca *CA) ServerCert(t *testing.T) tls.Certificate {
	return ca.Issue(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "hub"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
}

// ClientCert names a user (CN) and groups (O), as Kubernetes reads them.
func (ca *CA) ClientCert(t *testing.T, user string, groups ...string) tls.Certificate {
	return ca.Issue(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: user, Organization: groups},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
}

// CertPEM encodes a DER certificate.
func CertPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
