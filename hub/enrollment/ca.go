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
	"sync/atomic"
	"time"

	certutil "k8s.io/client-go/util/cert"
	"k8s.io/client-go/util/keyutil"

	"backhaul.io/backhaul/pkg/identity"
)

// CA signs agent certificates (and, when the hub provisions its own, the
// hub's serving certificate). Its key stays in the hub's memory and in the
// Secret or file it came from. It may be replaced while the hub runs
// ([CA.Replace]): every reader takes the state in force at that moment.
type CA struct {
	state atomic.Pointer[caState]
}

// caState is one version of the CA: the certificate that signs and its
// key, and the bundle trusted, which holds the signer and, while a CA is
// rotated, the one before it.
type caState struct {
	cert  *x509.Certificate
	key   crypto.Signer
	certs []*x509.Certificate
	pem   []byte
	pool  *x509.CertPool
}

// Cert is the CA certificate that signs.
func (ca *CA) Cert() *x509.Certificate { return ca.state.Load().cert }

// Key is the signing key.
func (ca *CA) Key() crypto.Signer { return ca.state.Load().key }

// PEM is the trusted bundle as agents and callers trust it.
func (ca *CA) PEM() []byte { return ca.state.Load().pem }

// Pool holds the trusted bundle, for verifying agents' and replicas'
// certificates.
func (ca *CA) Pool() *x509.CertPool { return ca.state.Load().pool }

// Certs is the trusted bundle.
func (ca *CA) Certs() []*x509.Certificate { return ca.state.Load().certs }

// Replace puts a new version of the CA in force: certPEM is a bundle of CA
// certificates, all trusted, one of which belongs to keyPEM and signs from
// now on. To rotate without refusing agents whose certificates the old CA
// signed, give the old certificate in the bundle too until they renewed.
// A bundle or key that does not parse leaves the CA as it was.
func (ca *CA) Replace(certPEM, keyPEM []byte) error {
	st, err := parseState(certPEM, keyPEM)
	if err != nil {
		return err
	}
	ca.state.Store(st)
	return nil
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
	st, err := newState([]*x509.Certificate{cert}, key)
	if err != nil {
		return nil, err
	}
	ca := &CA{}
	ca.state.Store(st)
	return ca, nil
}

func newState(certs []*x509.Certificate, key crypto.Signer) (*caState, error) {
	st := &caState{key: key, certs: certs, pool: x509.NewCertPool()}
	for _, c := range certs {
		if !c.IsCA {
			return nil, fmt.Errorf("certificate %q is not a CA", c.Subject.CommonName)
		}
		if st.cert == nil && publicKeyOf(key, c) {
			st.cert = c
		}
		st.pool.AddCert(c)
		st.pem = append(st.pem, pem.EncodeToMemory(&pem.Block{Type: certutil.CertificateBlockType, Bytes: c.Raw})...)
	}
	if st.cert == nil {
		return nil, errors.New("no CA certificate in the bundle belongs to the CA key")
	}
	return st, nil
}

// publicKeyOf says whether c certifies key's public key.
func publicKeyOf(key crypto.Signer, c *x509.Certificate) bool {
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(c.PublicKey)
}

func parseState(certPEM, keyPEM []byte) (*caState, error) {
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
	return newState(certs, signer)
}

// ParseCA reads a PEM bundle of CA certificates and the key of one of
// them, which signs.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	st, err := parseState(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	ca := &CA{}
	ca.state.Store(st)
	return ca, nil
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
func (ca *CA) KeyPEM() ([]byte, error) { return keyutil.MarshalPrivateKeyToPEM(ca.Key()) }

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
	st := ca.state.Load() // one version for the whole certificate
	now := time.Now()
	tmpl.SerialNumber = serial
	tmpl.NotBefore = now.Add(-clockSkew)
	tmpl.NotAfter = now.Add(validity)
	if tmpl.NotAfter.After(st.cert.NotAfter) {
		tmpl.NotAfter = st.cert.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, st.cert, pub, st.key)
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
