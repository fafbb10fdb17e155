package enrollment

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	kubefake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"backhaul.io/backhaul/hub/internal/hubtest"
	"backhaul.io/backhaul/hub/session"
	"backhaul.io/backhaul/pkg/identity"
	"backhaul.io/backhaul/pkg/testutil"
	"backhaul.io/backhaul/tunnel"
)

// readerSecrets reads token Secrets straight from a controller-runtime
// client (a fake, in these tests): always current, as the API is.
type readerSecrets struct{ c client.Reader }

func (r readerSecrets) Get(ctx context.Context, name string) (*corev1.Secret, error) {
	var s corev1.Secret
	if err := r.c.Get(ctx, client.ObjectKey{Namespace: testNS, Name: name}, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

func (r readerSecrets) List(ctx context.Context) ([]*corev1.Secret, error) {
	var list corev1.SecretList
	if err := r.c.List(ctx, &list, client.InNamespace(testNS), client.MatchingFields{"type": identity.BootstrapSecretType}); err != nil {
		return nil, err
	}
	out := make([]*corev1.Secret, len(list.Items))
	for i := range list.Items {
		out[i] = &list.Items[i]
	}
	return out, nil
}

// snapshotSecrets is a cache that stopped hearing from the API: it keeps
// answering what it held when it was taken.
type snapshotSecrets map[string]*corev1.Secret

func (s snapshotSecrets) Get(_ context.Context, name string) (*corev1.Secret, error) {
	if sec, ok := s[name]; ok {
		return sec, nil
	}
	return nil, apierrors.NewNotFound(corev1.Resource("secrets"), name)
}

func (s snapshotSecrets) List(context.Context) ([]*corev1.Secret, error) {
	out := make([]*corev1.Secret, 0, len(s))
	for _, sec := range s {
		out = append(out, sec)
	}
	return out, nil
}

// The attacker replays a token that a replica with a current cache just
// spent, to a replica whose cache has not heard of it yet. The stale read
// says "unused", and the CSR is fine; the update, which carries the stale
// resourceVersion, conflicts, so the token is still spent exactly once.
func TestStaleTokenCacheNeverSpendsATokenTwice(t *testing.T) {
	tok := newTestToken(t)
	api := fake.NewClientBuilder().WithObjects(tokenSecret(tok, "alpha", time.Now().Add(time.Hour))).Build()
	fresh, err := readerSecrets{api}.Get(t.Context(), tok.SecretName())
	require.NoError(t, err)
	stale := snapshotSecrets{tok.SecretName(): fresh.DeepCopy()}

	current := newTestEnroller(t, &BootstrapTokens{Secrets: readerSecrets{api}, Writer: api, Namespace: testNS}, DefaultLimits(), nil)
	lagging := newTestEnroller(t, &BootstrapTokens{Secrets: stale, Writer: api, Namespace: testNS}, DefaultLimits(), nil)

	csr, _ := testCSR(t)
	rec := current.enroll(t, "192.0.2.1:1000", tok.String(), csr)
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())

	rec = lagging.enroll(t, "192.0.2.2:1000", tok.String(), csr)
	assert.Equal(t, http.StatusUnauthorized, rec.Code, "the lagging replica refuses the spent token: %s", rec.Body.String())
	assert.Equal(t, 1.0, hubtest.Counter(t, lagging.reg, "backhaul_hub_enrollments_total", map[string]string{"kind": "enroll", "result": "unauthorized"}))
	assert.Equal(t, 0.0, hubtest.Counter(t, lagging.reg, "backhaul_hub_enrollments_total", map[string]string{"kind": "enroll", "result": "ok"}))

	t.Run("a read without a resourceVersion is never redeemed", func(t *testing.T) {
		other := newTestToken(t)
		s := tokenSecret(other, "alpha", time.Now().Add(time.Hour))
		b := &BootstrapTokens{Secrets: snapshotSecrets{other.SecretName(): s}, Writer: api, Namespace: testNS}
		r, err := b.Check(t.Context(), other.String(), "alpha")
		require.NoError(t, err)
		require.Error(t, b.Redeem(t.Context(), r))
	})
}

// The cache lists and watches the hub namespace's bootstrap-token Secrets
// and nothing else: not the CA's Secret, not other namespaces'.
func TestTokenCacheWatchesOnlyBootstrapSecrets(t *testing.T) {
	tok := newTestToken(t)
	kube := kubefake.NewClientset(tokenSecret(tok, "alpha", time.Now().Add(time.Hour)))
	var mu sync.Mutex
	var asked []string // field selectors
	var namespaces []string
	record := func(a k8stesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		namespaces = append(namespaces, a.GetNamespace())
		switch a := a.(type) {
		case k8stesting.ListAction:
			asked = append(asked, a.GetListRestrictions().Fields.String())
		case k8stesting.WatchAction:
			asked = append(asked, a.GetWatchRestrictions().Fields.String())
		}
		return false, nil, nil
	}
	kube.PrependReactor("list", "secrets", record)
	kube.PrependWatchReactor("secrets", func(a k8stesting.Action) (bool, watch.Interface, error) {
		_, _, _ = record(a)
		return false, nil, nil
	})

	c, err := NewTokenCache(kube, testNS)
	require.NoError(t, err)

	t.Run("not listed yet", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		_, err := c.Get(ctx, tok.SecretName())
		require.ErrorIs(t, err, ErrTokensNotSynced)
	})

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.Start(ctx)
	}()
	defer func() {
		cancel()
		<-done
	}()

	wait, stop := context.WithTimeout(t.Context(), hubtest.WaitBound)
	defer stop()
	s, err := c.Get(wait, tok.SecretName())
	require.NoError(t, err)
	assert.Equal(t, tok.Hash(), string(s.Data[identity.KeyTokenHash]))
	_, err = c.Get(wait, identity.BootstrapSecretPrefix+"nosuch")
	assert.True(t, apierrors.IsNotFound(err), "an unknown token is NotFound: %v", err)

	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, asked)
	for i, r := range asked {
		assert.Equal(t, testNS, namespaces[i], "scoped to the hub's namespace")
		assert.Equal(t, "type="+identity.BootstrapSecretType, r, "scoped to bootstrap tokens")
	}
}

// testEnroller is an Enroller served in memory.
type testEnroller struct {
	e   *Enroller
	reg *prometheus.Registry
	mux *http.ServeMux
}

func newTestEnroller(t *testing.T, tokens *BootstrapTokens, limits Limits, now func() time.Time, logTo ...*strings.Builder) *testEnroller {
	t.Helper()
	ca, err := NewCA("test-ca")
	require.NoError(t, err)
	reg := prometheus.NewRegistry()
	log := testutil.Logger(t)
	if len(logTo) > 0 {
		log = warnLogger(logTo[0])
	}
	e, err := New(Config{
		Tokens: tokens, CA: ca, Clusters: staticUIDs{"alpha": "uid-1"},
		Sessions: session.NewRegistry(testutil.Logger(t), session.NewMetrics(prometheus.NewRegistry())),
		Validity: time.Hour, Limits: limits, Log: log, Metrics: NewMetrics(reg), Now: now,
	})
	require.NoError(t, err)
	mux := http.NewServeMux()
	e.Register(mux)
	return &testEnroller{e: e, reg: reg, mux: mux}
}

func (te *testEnroller) enroll(t *testing.T, remote, token string, csr []byte) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, identity.PathEnroll, strings.NewReader(string(csr)))
	req.RemoteAddr = remote
	req.Header.Set(tunnel.HeaderCluster, "alpha")
	req.Header.Set("Authorization", "Bearer "+token)
	rec := httptest.NewRecorder()
	te.mux.ServeHTTP(rec, req)
	return rec
}

func (te *testEnroller) status(t *testing.T, remote, token string, header http.Header) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, identity.PathEnrollStatus, nil)
	req.RemoteAddr = remote
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", "Bearer "+token)
	rec := httptest.NewRecorder()
	te.mux.ServeHTTP(rec, req)
	return rec
}
