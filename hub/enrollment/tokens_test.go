package enrollment

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"backhaul.io/backhaul/hub/session"
	"backhaul.io/backhaul/pkg/identity"
)

const testNS = "backhaul-system"

// tokenSecret is what backhaulctl stores for tok.
func tokenSecret(tok identity.Token, cluster string, exp time.Time) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: tok.SecretName()},
		Type:       identity.BootstrapSecretType,
		Data: map[string][]byte{
			identity.KeyTokenID: []byte(tok.ID), identity.KeyTokenHash: []byte(tok.Hash()),
			identity.KeyCluster: []byte(cluster), identity.KeyExpiration: []byte(exp.UTC().Format(time.RFC3339)),
		},
	}
}

func newTestToken(t *testing.T) identity.Token {
	t.Helper()
	tok, err := identity.NewToken()
	require.NoError(t, err)
	return tok
}

// staticUIDs stands in for the Cluster informer.
type staticUIDs map[string]types.UID

func (s staticUIDs) UID(c string) (types.UID, bool) { u, ok := s[c]; return u, ok }

func testCSR(t *testing.T) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "anything"}}, key)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), key
}

func TestBootstrapTokens(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	good, expired, used := newTestToken(t), newTestToken(t), newTestToken(t)
	usedSecret := tokenSecret(used, "alpha", now.Add(time.Hour))
	usedSecret.Data[identity.KeyUsed] = []byte("true")
	c := fake.NewClientBuilder().WithObjects(
		tokenSecret(good, "alpha", now.Add(time.Hour)),
		tokenSecret(expired, "alpha", now.Add(-time.Second)),
		usedSecret,
	).WithIndex(&corev1.Secret{}, "type", func(o client.Object) []string {
		// The API server supports this field selector; the fake needs
		// an index to.
		return []string{string(o.(*corev1.Secret).Type)}
	}).Build()
	b := &BootstrapTokens{Secrets: readerSecrets{c}, Writer: c, Namespace: testNS, Now: func() time.Time { return now }}
	ctx := t.Context()

	for _, tc := range []struct {
		name, token, cluster string
		want                 error
	}{
		{"good", good.String(), "alpha", nil},
		{"other cluster", good.String(), "beta", session.ErrAgentForbidden},
		{"wrong secret", good.ID + ".0000000000000000", "alpha", errTokenInvalid},
		{"unknown id", "zzzzzz.0000000000000000", "alpha", errTokenInvalid},
		{"malformed", "hello", "alpha", errTokenInvalid},
		{"expired", expired.String(), "alpha", errTokenInvalid},
		{"used", used.String(), "alpha", errTokenInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := b.Check(ctx, tc.token, tc.cluster)
			if tc.want == nil {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, tc.want)
			}
		})
	}

	t.Run("one use under concurrency", func(t *testing.T) {
		var wins atomic.Int32
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rec, err := b.Check(ctx, good.String(), "alpha")
				if err != nil {
					return
				}
				if b.Redeem(ctx, rec) == nil {
					wins.Add(1)
				}
			}()
		}
		wg.Wait()
		assert.Equal(t, int32(1), wins.Load())
		_, err := b.Check(ctx, good.String(), "alpha")
		require.ErrorIs(t, err, errTokenInvalid)
		cluster, err := b.Lookup(ctx, good.String())
		require.NoError(t, err, "a used token still looks up until it expires")
		assert.Equal(t, "alpha", cluster)
	})

	t.Run("janitor deletes expired", func(t *testing.T) {
		n, err := b.DeleteExpired(ctx)
		require.NoError(t, err)
		assert.Equal(t, 1, n)
		var s corev1.Secret
		require.Error(t, c.Get(ctx, client.ObjectKey{Namespace: testNS, Name: expired.SecretName()}, &s))
	})
}
