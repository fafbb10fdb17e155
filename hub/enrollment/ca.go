package enrollment

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"time"

	certutil "k8s.io/client-go/util/cert"
	"k8s.io/client-go/util/keyutil"

	"backhaul.io/backhaul/pkg/identity"
)

// CA signs agent certificates (and, when the hub provisions its own, the
// hub's serving certificate). Its key stays in the hub's memory and in the
// Secret or file it came from.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// PEM is the CA certificate as agents and callers trust it.
	PEM []byte
	// Pool holds Cert, for verifying agents' client certificates.
	Pool *x509.CertPool
}

// NewCA returns a fresh self-signed ECDSA P-256 CA, valid ten years (a CA
// rotates by replacing its Secret, never by surprise expiry).
func NewCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	cert, err := certutil.NewSelfSignedCACert(certutil.Config{CommonName: name}, key)
	if err != nil {
		return nil, fmt.Errorf("self-sign CA: %w", err)
	}
	return newCA(cert, key)
}

func newCA(cert *x509.Certificate, key crypto.Signer) (*CA, error) {
	if !cert.IsCA {
		return nil, fmt.Errorf("certificate %q is not a CA", cert.Subject.CommonName)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{Cert: cert, Key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: certutil.CertificateBlockType, Bytes: cert.Raw}), Pool: pool}, nil
}

// ParseCA reads a PEM certificate and key.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	certs, err := certutil.ParseCertsPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	k, err := keyutil.ParsePrivateKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, errors.New("CA key cannot sign")
	}
	return newCA(certs[0], signer)
}

// LoadCAFiles reads a CA from PEM files.
func LoadCAFiles(certFile, keyFile string) (*CA, error) {
	c, err := os.ReadFile(certFile)
	if err != nil {
		return nil, err
	}
	k, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, err
	}
	return ParseCA(c, k)
}

// KeyPEM encodes the CA key for storage.
func (ca *CA) KeyPEM() ([]byte, error) { return keyutil.MarshalPrivateKeyToPEM(ca.Key) }

// SignAgent issues a client certificate for id to the CSR's key, valid for
// validity from now (back-dated a little for clock skew).
func (ca *CA) SignAgent(csr *x509.CertificateRequest, id identity.AgentIdentity, validity time.Duration) ([]byte, error) {
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: id.CommonName(), Organization: []string{identity.AgentGroup}},
		URIs:        []*url.URL{id.URI()},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	return ca.sign(tmpl, csr.PublicKey, validity)
}

// SignServing issues the hub's serving certificate for hosts (DNS names or
// IPs) to key.
func (ca *CA) SignServing(pub crypto.PublicKey, hosts []string, validity time.Duration) ([]byte, error) {
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "backhaul-hub"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return ca.sign(tmpl, pub, validity)
}

// clockSkew back-dates certificates so a member whose clock runs a little
// behind accepts them at once.
const clockSkew = 5 * time.Minute

func (ca *CA) sign(tmpl *x509.Certificate, pub crypto.PublicKey, validity time.Duration) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl.SerialNumber = serial
	tmpl.NotBefore = now.Add(-clockSkew)
	tmpl.NotAfter = now.Add(validity)
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// SignReplica issues hub replica name's certificate, for client and server
// auth on the connections replicas keep with each other, to key.
func (ca *CA) SignReplica(pub crypto.PublicKey, name string, validity time.Duration) ([]byte, error) {
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: identity.ReplicaCNPrefix + name},
		URIs:        []*url.URL{identity.ReplicaURI(name)},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}
	return ca.sign(tmpl, pub, validity)
}
