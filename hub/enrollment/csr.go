package enrollment

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"

	"backhaul.io/backhaul/pkg/identity"
)

// ErrBadCSR marks a CSR the hub refuses to sign; enrollment answers 400.
var ErrBadCSR = errors.New("bad certificate signing request")

// ParseCSR reads exactly one PEM CSR and checks its signature and key.
// Whatever the CSR asks for beyond its public key is ignored: the hub
// decides the subject, names and usages.
func ParseCSR(data []byte) (*x509.CertificateRequest, error) {
	if len(data) > identity.MaxCSRBytes {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrBadCSR, len(data), identity.MaxCSRBytes)
	}
	block, rest := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("%w: want one PEM \"CERTIFICATE REQUEST\" block", ErrBadCSR)
	}
	if len(pemTrim(rest)) != 0 {
		return nil, fmt.Errorf("%w: trailing data after the CSR", ErrBadCSR)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature: %v", ErrBadCSR, err)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return nil, fmt.Errorf("%w: ECDSA curve %s not accepted (P-256, P-384)", ErrBadCSR, k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, fmt.Errorf("%w: RSA key of %d bits, at least 2048", ErrBadCSR, k.N.BitLen())
		}
	case ed25519.PublicKey:
	default:
		return nil, fmt.Errorf("%w: unsupported key type %T", ErrBadCSR, k)
	}
	return csr, nil
}

func pemTrim(b []byte) []byte {
	for len(b) > 0 && (b[0] == '\n' || b[0] == '\r' || b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	return b
}
