package peer

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"backhaul.io/backhaul/pkg/identity"
)

// Sign issues a replica certificate (PEM) for pub, valid for validity.
type Sign func(pub crypto.PublicKey, validity time.Duration) ([]byte, error)

// Identity is this replica's certificate for peer connections, issued by
// the hub CA at start and renewed at two thirds of its life.
type Identity struct {
	name     string
	roots    func() *x509.CertPool
	sign     Sign
	validity time.Duration
	log      hclog.Logger
	cert     atomic.Pointer[tls.Certificate]
}

// NewIdentity issues replica name's first certificate; roots holds the CA
// every replica's certificate comes from.
func NewIdentity(name string, roots func() *x509.CertPool, sign Sign, validity time.Duration, log hclog.Logger) (*Identity, error) {
	if validity < time.Minute {
		return nil, fmt.Errorf("peer identity: validity %v is under a minute", validity)
	}
	id := &Identity{name: name, roots: roots, sign: sign, validity: validity, log: log}
	if err := id.issue(); err != nil {
		return nil, err
	}
	return id, nil
}

func (id *Identity) issue() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	certPEM, err := id.sign(key.Public(), id.validity)
	if err != nil {
		return fmt.Errorf("peer identity: %w", err)
	}
	cert, err := pairOf(certPEM, key)
	if err != nil {
		return fmt.Errorf("peer identity: %w", err)
	}
	id.cert.Store(&cert)
	return nil
}

// Run renews the certificate at two thirds of its life until ctx ends.
func (id *Identity) Run(ctx context.Context) error {
	for {
		t := time.NewTimer(id.validity * 2 / 3)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		if err := id.issue(); err != nil {
			id.log.Error("cannot renew this replica's peer certificate", "error", err)
		}
	}
}

func (id *Identity) current() (*tls.Certificate, error) { return id.cert.Load(), nil }

// ServerTLS is the peer listener's TLS: only certificates of the hub CA.
// The handler checks they name a replica.
func (id *Identity) ServerTLS() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS13,
		NextProtos:     []string{"http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return id.current() },
		// The chain is verified against the CA in force at each
		// handshake (VerifyConnection), not a pool fixed at start.
		ClientAuth: tls.RequireAnyClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := verifyReplica(cs.PeerCertificates, id.roots(), x509.ExtKeyUsageClientAuth)
			return err
		},
	}
}

// ClientTLS verifies that the peer dialled is replica peer: peers are
// dialled by Pod address, which their certificates need not name, so the
// chain is verified against the hub CA and the identity by the replica
// URI instead of a host name.
func (id *Identity) ClientTLS(peer string) *tls.Config {
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return id.current() },
		// Verification is VerifyConnection's, by replica identity.
		InsecureSkipVerify: true, //nolint:gosec // verified below against the hub CA
		VerifyConnection: func(cs tls.ConnectionState) error {
			name, err := verifyReplica(cs.PeerCertificates, id.roots(), x509.ExtKeyUsageServerAuth)
			if err != nil {
				return err
			}
			if name != peer {
				return fmt.Errorf("dialled replica %q but %q answered", peer, name)
			}
			return nil
		},
	}
}

// verifyReplica checks certs chain to roots for usage and names a replica.
func verifyReplica(certs []*x509.Certificate, roots *x509.CertPool, usage x509.ExtKeyUsage) (string, error) {
	if len(certs) == 0 {
		return "", errors.New("no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return "", err
	}
	return identity.ReplicaOf(certs[0])
}

// pairOf makes a tls.Certificate of a PEM chain and its key.
func pairOf(certPEM []byte, key crypto.Signer) (tls.Certificate, error) {
	var cert tls.Certificate
	for rest := certPEM; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		cert.Certificate = append(cert.Certificate, block.Bytes)
	}
	if len(cert.Certificate) == 0 {
		return cert, errors.New("no certificate in the CA's answer")
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return cert, err
	}
	cert.Leaf, cert.PrivateKey = leaf, key
	return cert, nil
}
