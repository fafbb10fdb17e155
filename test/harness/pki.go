package harness

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// certValidity is long enough for any test run, short enough to be obviously
// throwaway.
const certValidity = 7 * 24 * time.Hour

// CA is a throwaway ECDSA P-256 certificate authority whose certificate and
// key live as PEM files in a directory. Issued certificates are written to the
// same directory as <name>.crt and <name>.key.
type CA struct {
	Dir      string // directory holding the CA's and issued files
	CertFile string // PEM certificate of the CA
	KeyFile  string // PEM (SEC 1) private key of the CA
	CertPEM  []byte // contents of CertFile

	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// NewCA creates a self-signed CA called name and writes <dir>/<name>.crt and
// <dir>/<name>.key.
func NewCA(dir, name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ca %s: generate key: %w", name, err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, fmt.Errorf("ca %s: %w", name, err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("ca %s: sign: %w", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca %s: %w", name, err)
	}
	certFile, keyFile, err := writePair(dir, name, der, key)
	if err != nil {
		return nil, fmt.Errorf("ca %s: %w", name, err)
	}
	return &CA{
		Dir:      dir,
		CertFile: certFile,
		KeyFile:  keyFile,
		CertPEM:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		cert:     cert,
		key:      key,
	}, nil
}

// In returns ca issuing into dir instead of its own directory (a node's
// certificates beside the node, signed by its cluster's CA).
func (ca *CA) In(dir string) *CA {
	c := *ca
	c.Dir = dir
	return &c
}

// Serving issues a TLS server certificate valid for hosts, each a DNS name or
// an IP address, and writes <Dir>/<name>.crt and <Dir>/<name>.key.
func (ca *CA) Serving(name string, hosts []string) (certFile, keyFile string, err error) {
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: name},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return ca.issue(name, tmpl)
}

// Client issues a TLS client certificate with common name cn and
// organizations orgs (which Kubernetes maps to user and groups), and writes
// <Dir>/<name>.crt and <Dir>/<name>.key.
func (ca *CA) Client(name, cn string, orgs []string) (certFile, keyFile string, err error) {
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn, Organization: orgs},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	return ca.issue(name, tmpl)
}

func (ca *CA) issue(name string, tmpl *x509.Certificate) (certFile, keyFile string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("cert %s: generate key: %w", name, err)
	}
	if tmpl.SerialNumber, err = newSerial(); err != nil {
		return "", "", fmt.Errorf("cert %s: %w", name, err)
	}
	now := time.Now()
	tmpl.NotBefore = now.Add(-time.Hour)
	tmpl.NotAfter = now.Add(certValidity)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.BasicConstraintsValid = true
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return "", "", fmt.Errorf("cert %s: sign: %w", name, err)
	}
	certFile, keyFile, err = writePair(ca.Dir, name, der, key)
	if err != nil {
		return "", "", fmt.Errorf("cert %s: %w", name, err)
	}
	return certFile, keyFile, nil
}

// WriteKey generates an ECDSA P-256 private key and writes it as a SEC 1 PEM
// file at path (for example a service-account signing key).
func WriteKey(path string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate key %s: %w", path, err)
	}
	return writeKey(path, key)
}

func writePair(dir, name string, certDER []byte, key *ecdsa.PrivateKey) (certFile, keyFile string, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	certFile = filepath.Join(dir, name+".crt")
	keyFile = filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certDER}), 0o644); err != nil {
		return "", "", err
	}
	if err := writeKey(keyFile, key); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

// writeKey writes key in SEC 1 form ("EC PRIVATE KEY"), which every consumer
// accepts, including kube-apiserver's --service-account-key-file (PKCS#8 is
// not accepted there).
func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return fmt.Errorf("marshal key %s: %w", path, err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return fmt.Errorf("write key: %w", err)
	}
	return nil
}

func newSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial: %w", err)
	}
	return s, nil
}
