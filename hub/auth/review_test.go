package auth

import (
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"
)

var errHostDown = apierrors.NewServiceUnavailable("etcd is sad")

// fakeHost answers reviews with respond and records what it was asked.
type fakeHost[Spec, Status any] struct {
	calls   atomic.Int32
	mu      sync.Mutex
	specs   []Spec
	respond func(Spec) (Status, error)
}

func (h *fakeHost[Spec, Status]) last(t *testing.T) Spec {
	h.mu.Lock()
	defer h.mu.Unlock()
	require.NotEmpty(t, h.specs)
	return h.specs[len(h.specs)-1]
}

func newTokenHost(respond func(authenticationv1.TokenReviewSpec) (authenticationv1.TokenReviewStatus, error)) (*fake.Clientset, *fakeHost[authenticationv1.TokenReviewSpec, authenticationv1.TokenReviewStatus]) {
	h := &fakeHost[authenticationv1.TokenReviewSpec, authenticationv1.TokenReviewStatus]{respond: respond}
	c := fake.NewClientset()
	c.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		tr := a.(k8stesting.CreateAction).GetObject().(*authenticationv1.TokenReview).DeepCopy()
		h.calls.Add(1)
		h.mu.Lock()
		h.specs = append(h.specs, tr.Spec)
		h.mu.Unlock()
		st, err := h.respond(tr.Spec)
		tr.Status = st
		return true, tr, err
	})
	return c, h
}

func newAccessHost(respond func(authorizationv1.SubjectAccessReviewSpec) (authorizationv1.SubjectAccessReviewStatus, error)) (*fake.Clientset, *fakeHost[authorizationv1.SubjectAccessReviewSpec, authorizationv1.SubjectAccessReviewStatus]) {
	h := &fakeHost[authorizationv1.SubjectAccessReviewSpec, authorizationv1.SubjectAccessReviewStatus]{respond: respond}
	c := fake.NewClientset()
	c.PrependReactor("create", "subjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		sar := a.(k8stesting.CreateAction).GetObject().(*authorizationv1.SubjectAccessReview).DeepCopy()
		h.calls.Add(1)
		h.mu.Lock()
		h.specs = append(h.specs, sar.Spec)
		h.mu.Unlock()
		st, err := h.respond(sar.Spec)
		sar.Status = st
		return true, sar, err
	})
	return c, h
}

// tokensOf authenticates "good-*" tokens as alice, rejects "bad-*" and
// fails on "down-*".
func tokensOf(spec authenticationv1.TokenReviewSpec) (authenticationv1.TokenReviewStatus, error) {
	switch spec.Token[:3] {
	case "goo":
		return authenticationv1.TokenReviewStatus{Authenticated: true, Audiences: spec.Audiences, User: authenticationv1.UserInfo{
			Username: "alice", UID: "uid-alice", Groups: []string{"dev", "system:authenticated"},
			Extra: map[string]authenticationv1.ExtraValue{"scopes.example.com": {"read", "write"}},
		}}, nil
	case "bad":
		return authenticationv1.TokenReviewStatus{Error: "token expired"}, nil
	default:
		return authenticationv1.TokenReviewStatus{}, errHostDown
	}
}

func testCacheConfig(clk *clocktesting.FakeClock) CacheConfig {
	cfg := DefaultTokenReviewConfig()
	cfg.Clock = clk
	return cfg
}

func TestCacheConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*CacheConfig)
		want   string
	}{
		{name: "defaults", mutate: func(*CacheConfig) {}},
		{name: "zero TTLs disable caching", mutate: func(c *CacheConfig) { c.SuccessTTL, c.FailureTTL = 0, 0 }},
		{name: "negative TTL", mutate: func(c *CacheConfig) { c.FailureTTL = -1 }, want: "negative"},
		{name: "no size", mutate: func(c *CacheConfig) { c.Size = 0 }, want: "size"},
		{name: "no timeout", mutate: func(c *CacheConfig) { c.Timeout = 0 }, want: "timeout"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultAccessReviewConfig()
			tc.mutate(&cfg)
			_, err := NewSubjectAccessReviewer(fake.NewClientset(), cfg)
			if tc.want == "" {
				assert.NoError(t, err)
			} else {
				assert.ErrorContains(t, err, tc.want)
			}
		})
	}
}

var carol = &User{Name: "carol", UID: "uid-carol", Groups: []string{"ops", "dev"},
	Extra: map[string][]string{"scopes.example.com": {"read"}}}
