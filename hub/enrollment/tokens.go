package enrollment

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"backhaul.io/backhaul/hub/session"
	"backhaul.io/backhaul/pkg/identity"
)

// Bootstrap token refusals. errTokenInvalid covers unknown, wrong, expired
// and used tokens alike (401) so a guesser learns nothing; the log says
// which.
var (
	errTokenInvalid      = errors.New("bootstrap token is invalid, expired or already used")
	errTokenOtherCluster = fmt.Errorf("%w: bootstrap token belongs to another cluster", session.ErrAgentForbidden)
)

// TokenSecrets reads the bootstrap-token Secrets of the hub's namespace.
// In the hub it is a TokenCache: anyone who reaches the hub can present a
// well-formed token, and checking one must not cost the host API a request.
// Get answers a missing Secret with a NotFound API error.
type TokenSecrets interface {
	Get(ctx context.Context, name string) (*corev1.Secret, error)
	List(ctx context.Context) ([]*corev1.Secret, error)
}

// BootstrapTokens checks and redeems the one-use tokens backhaulctl stores,
// as SHA-256 hashes, in Secrets in the hub's namespace.
type BootstrapTokens struct {
	// Secrets may be stale (an informer): Redeem's update carries the
	// resourceVersion that was read, so a token another replica spent a
	// moment ago conflicts instead of being spent twice.
	Secrets TokenSecrets
	// Writer goes to the host API, uncached.
	Writer    client.Writer
	Namespace string
	Now       func() time.Time
}

// tokenRecord is a token's Secret, checked.
type tokenRecord struct {
	secret  *corev1.Secret
	cluster string
	used    bool
}

// check finds raw's Secret and verifies hash and expiry. A used token
// passes: callers decide whether that matters.
func (b *BootstrapTokens) check(ctx context.Context, raw string) (*tokenRecord, error) {
	tok, err := identity.ParseToken(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errTokenInvalid, err)
	}
	// s belongs to the cache: read it, never write it (Redeem copies).
	s, err := b.Secrets.Get(ctx, tok.SecretName())
	if err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("%w: no token %s", errTokenInvalid, tok.ID)
		}
		return nil, fmt.Errorf("reading bootstrap token %s: %w", tok.ID, err)
	}
	if s.Type != identity.BootstrapSecretType {
		return nil, fmt.Errorf("%w: secret %s is not a bootstrap token", errTokenInvalid, s.Name)
	}
	if subtle.ConstantTimeCompare(s.Data[identity.KeyTokenHash], []byte(tok.Hash())) != 1 {
		return nil, fmt.Errorf("%w: token %s: wrong secret", errTokenInvalid, tok.ID)
	}
	exp, err := time.Parse(time.RFC3339, string(s.Data[identity.KeyExpiration]))
	if err != nil {
		return nil, fmt.Errorf("%w: token %s: bad expiration: %v", errTokenInvalid, tok.ID, err)
	}
	if !b.now().Before(exp) {
		return nil, fmt.Errorf("%w: token %s expired at %s", errTokenInvalid, tok.ID, exp.Format(time.RFC3339))
	}
	return &tokenRecord{secret: s, cluster: string(s.Data[identity.KeyCluster]), used: string(s.Data[identity.KeyUsed]) == "true"}, nil
}

// Check verifies raw is a valid, unused token for cluster.
func (b *BootstrapTokens) Check(ctx context.Context, raw, cluster string) (*tokenRecord, error) {
	rec, err := b.check(ctx, raw)
	if err != nil {
		return nil, err
	}
	if rec.used {
		return nil, fmt.Errorf("%w: token %s was already used", errTokenInvalid, rec.secret.Data[identity.KeyTokenID])
	}
	if rec.cluster != cluster {
		return nil, fmt.Errorf("%w (%q, not %q)", errTokenOtherCluster, rec.cluster, cluster)
	}
	return rec, nil
}

// Redeem marks rec used. The update carries the resourceVersion read in
// Check, so of two concurrent redemptions exactly one succeeds, and a
// stale read of a token spent since (the cache lags the API) conflicts.
func (b *BootstrapTokens) Redeem(ctx context.Context, rec *tokenRecord) error {
	s := rec.secret.DeepCopy()
	if s.ResourceVersion == "" {
		// Without it the update would be unconditional: refuse rather
		// than risk spending a token twice.
		return fmt.Errorf("redeeming bootstrap token %s: read without a resourceVersion", s.Data[identity.KeyTokenID])
	}
	s.Data[identity.KeyUsed] = []byte("true")
	if err := b.Writer.Update(ctx, s); err != nil {
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			return fmt.Errorf("%w: token %s was redeemed concurrently", errTokenInvalid, s.Data[identity.KeyTokenID])
		}
		return fmt.Errorf("redeeming bootstrap token: %w", err)
	}
	return nil
}

// Lookup returns the cluster of a valid token, used or not (the onboarding
// script polls connection status with it until it expires).
func (b *BootstrapTokens) Lookup(ctx context.Context, raw string) (string, error) {
	rec, err := b.check(ctx, raw)
	if err != nil {
		return "", err
	}
	return rec.cluster, nil
}

// DeleteExpired removes token Secrets past expiry. Returns how many.
func (b *BootstrapTokens) DeleteExpired(ctx context.Context) (int, error) {
	list, err := b.Secrets.List(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, s := range list {
		exp, err := time.Parse(time.RFC3339, string(s.Data[identity.KeyExpiration]))
		if err == nil && b.now().Before(exp) {
			continue
		}
		if err := b.Writer.Delete(ctx, s.DeepCopy(), client.Preconditions{UID: &s.UID}); client.IgnoreNotFound(err) != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

func (b *BootstrapTokens) now() time.Time {
	if b.Now != nil {
		return b.Now()
	}
	return time.Now()
}
