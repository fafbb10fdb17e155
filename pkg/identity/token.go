package identity

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"time"
)

// A bootstrap token is "ID.SECRET", 6 and 16 characters of [a-z0-9], as
// kubeadm's. The ID names the Secret that stores the token's SHA-256, never
// the token itself.
const (
	TokenIDLen     = 6
	TokenSecretLen = 16

	// BootstrapSecretType marks a hub-side Secret holding a bootstrap token.
	BootstrapSecretType = "backhaul.io/bootstrap-token"
	// BootstrapSecretPrefix + ID is the Secret's name.
	BootstrapSecretPrefix = "backhaul-bootstrap-"
	// Keys of a bootstrap token Secret's data.
	KeyTokenID    = "token-id"
	KeyTokenHash  = "token-hash" // hex SHA-256 of the whole token
	KeyCluster    = "cluster"
	KeyExpiration = "expiration" // RFC 3339
	KeyUsed       = "used"       // "true" once exchanged for a certificate
	// LabelCluster on a bootstrap Secret names its cluster.
	LabelCluster = "backhaul.io/cluster"

	// DefaultTokenTTL is how long an unused bootstrap token stays valid.
	DefaultTokenTTL = time.Hour
)

var tokenRE = regexp.MustCompile(`^([a-z0-9]{6})\.([a-z0-9]{16})$`)

// ErrMalformedToken is returned for a string that is not a bootstrap token.
var ErrMalformedToken = errors.New("malformed bootstrap token: want [a-z0-9]{6}.[a-z0-9]{16}")

// Token is a parsed bootstrap token.
type Token struct {
	ID, Secret string
}

// String is the token as the agent presents it.
func (t Token) String() string { return t.ID + "." + t.Secret }

// Hash is the hex SHA-256 stored in place of the token.
func (t Token) Hash() string {
	sum := sha256.Sum256([]byte(t.String()))
	return hex.EncodeToString(sum[:])
}

// SecretName is the name of the Secret storing t.
func (t Token) SecretName() string { return BootstrapSecretPrefix + t.ID }

// ParseToken checks s's format.
func ParseToken(s string) (Token, error) {
	m := tokenRE.FindStringSubmatch(s)
	if m == nil {
		return Token{}, ErrMalformedToken
	}
	return Token{ID: m[1], Secret: m[2]}, nil
}

// NewToken returns a random token from crypto/rand.
func NewToken() (Token, error) {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, TokenIDLen+TokenSecretLen)
	if _, err := rand.Read(b); err != nil {
		return Token{}, fmt.Errorf("bootstrap token: %w", err)
	}
	for i := range b {
		// 256 % 36 != 0 biases the first 4 letters by 1/256: about 0.3
		// bits lost of 113. Not worth rejection sampling.
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return Token{ID: string(b[:TokenIDLen]), Secret: string(b[TokenIDLen:])}, nil
}
