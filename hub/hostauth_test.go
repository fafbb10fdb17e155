package hub

import (
	"context"
	"crypto/sha256"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
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

func TestTokenReviewer(t *testing.T) {
	alice := &User{Name: "alice", UID: "uid-alice", Groups: []string{"dev", "system:authenticated"},
		Extra: map[string][]string{"scopes.example.com": {"read", "write"}}}
	tests := []struct {
		name      string
		header    string
		audiences []string
		respond   func(authenticationv1.TokenReviewSpec) (authenticationv1.TokenReviewStatus, error)
		wantUser  *User
		wantOK    bool
		wantErr   error  // errors.Is target
		errText   string // substring of the error
		wantCalls int32
	}{
		{name: "no credentials", header: "", wantCalls: 0},
		{name: "basic auth is not ours", header: "Basic YTpi", wantCalls: 0},
		{name: "authenticated maps name uid groups extra", header: "Bearer good-1", wantUser: alice, wantOK: true, wantCalls: 1},
		{name: "rejected carries status error", header: "Bearer bad-1", wantErr: errBadCredentials, errText: "token expired", wantCalls: 1},
		{name: "rejected without status error", header: "Bearer x",
			respond: func(authenticationv1.TokenReviewSpec) (authenticationv1.TokenReviewStatus, error) {
				return authenticationv1.TokenReviewStatus{}, nil
			}, wantErr: errBadCredentials, errText: "not authenticated", wantCalls: 1},
		{name: "authenticated without user name", header: "Bearer x",
			respond: func(authenticationv1.TokenReviewSpec) (authenticationv1.TokenReviewStatus, error) {
				return authenticationv1.TokenReviewStatus{Authenticated: true}, nil
			}, wantErr: errBadCredentials, errText: "without a user name", wantCalls: 1},
		{name: "audience honoured", header: "Bearer good-2", audiences: []string{"backhaul"}, wantUser: alice, wantOK: true, wantCalls: 1},
		{name: "audience ignored by the host", header: "Bearer x", audiences: []string{"backhaul"},
			respond: func(s authenticationv1.TokenReviewSpec) (authenticationv1.TokenReviewStatus, error) {
				return authenticationv1.TokenReviewStatus{Authenticated: true, User: authenticationv1.UserInfo{Username: "alice"}}, nil
			}, wantErr: errBadCredentials, errText: "audiences", wantCalls: 1},
		{name: "host down is not bad credentials", header: "Bearer down-1", wantErr: ErrAuthUnavailable, errText: "etcd is sad", wantCalls: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			respond := tc.respond
			if respond == nil {
				respond = tokensOf
			}
			client, host := newTokenHost(respond)
			tr, err := NewTokenReviewer(client, tc.audiences, testCacheConfig(clocktesting.NewFakeClock(time.Now())))
			require.NoError(t, err)
			r := bearerRequest("")
			if tc.header != "" {
				r.Header.Set("Authorization", tc.header)
			}
			u, ok, err := tr.Authenticate(r)
			assert.Equal(t, tc.wantCalls, host.calls.Load())
			assert.Equal(t, tc.wantOK, ok)
			assert.Equal(t, tc.wantUser, u)
			if tc.wantErr == nil {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, tc.wantErr)
				assert.ErrorContains(t, err, tc.errText)
			}
			if tc.wantCalls > 0 {
				assert.Equal(t, tc.audiences, host.last(t).Audiences)
			}
			if errors.Is(tc.wantErr, ErrAuthUnavailable) {
				assert.NotErrorIs(t, err, errBadCredentials)
				assert.True(t, apierrors.IsServiceUnavailable(err), "the API error stays inspectable")
			}
		})
	}
}

func TestTokenReviewerCache(t *testing.T) {
	type step struct {
		after     time.Duration // clock advance before the request
		wantCalls int32         // reviews sent so far
	}
	tests := []struct {
		name  string
		token string
		steps []step
	}{
		{name: "success kept for SuccessTTL", token: "good-1", steps: []step{{0, 1}, {9 * time.Second, 1}, {time.Second, 2}, {time.Second, 2}}},
		{name: "failure kept for FailureTTL", token: "bad-1", steps: []step{{0, 1}, {2 * time.Second, 1}, {time.Second, 2}, {time.Second, 2}}},
		{name: "API error never kept", token: "down-1", steps: []step{{0, 1}, {0, 2}, {0, 3}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := clocktesting.NewFakeClock(time.Now())
			client, host := newTokenHost(tokensOf)
			tr, err := NewTokenReviewer(client, nil, testCacheConfig(clk))
			require.NoError(t, err)
			for i, s := range tc.steps {
				clk.Step(s.after)
				_, _, _ = tr.Authenticate(bearerRequest(tc.token))
				assert.Equal(t, s.wantCalls, host.calls.Load(), "after request %d", i)
			}
		})
	}
}

func TestTokenReviewerKeepsNoTokenAndCopiesUser(t *testing.T) {
	client, host := newTokenHost(tokensOf)
	tr, err := NewTokenReviewer(client, nil, DefaultTokenReviewConfig())
	require.NoError(t, err)
	u, ok, err := tr.Authenticate(bearerRequest("good-secret"))
	require.NoError(t, err)
	require.True(t, ok)
	u.Groups[0] = "system:masters"
	u.Extra["scopes.example.com"][0] = "admin"

	again, _, _ := tr.Authenticate(bearerRequest("good-secret"))
	assert.Equal(t, []string{"dev", "system:authenticated"}, again.Groups, "a caller cannot poison the cache")
	assert.Equal(t, []string{"read", "write"}, again.Extra["scopes.example.com"])
	assert.Equal(t, int32(1), host.calls.Load())
	_, byToken := tr.cache.entries.Get("good-secret")
	assert.False(t, byToken, "entries are keyed by digest")
	d := sha256.Sum256([]byte("good-secret"))
	_, byDigest := tr.cache.entries.Get(string(d[:]))
	assert.True(t, byDigest)
}

func TestTokenReviewerLRUBound(t *testing.T) {
	client, host := newTokenHost(tokensOf)
	cfg := DefaultTokenReviewConfig()
	cfg.Size = 2
	tr, err := NewTokenReviewer(client, nil, cfg)
	require.NoError(t, err)
	for _, tok := range []string{"good-1", "good-2", "good-3", "good-3", "good-1"} {
		_, _, err := tr.Authenticate(bearerRequest(tok))
		require.NoError(t, err)
	}
	assert.Equal(t, int32(4), host.calls.Load(), "good-1 was evicted by good-3")
	assert.Equal(t, 2, tr.cache.entries.Len())
}

// blockingHost holds every review until release is closed.
func blockingHost(inner func(authenticationv1.TokenReviewSpec) (authenticationv1.TokenReviewStatus, error)) (func(authenticationv1.TokenReviewSpec) (authenticationv1.TokenReviewStatus, error), chan struct{}) {
	release := make(chan struct{})
	return func(s authenticationv1.TokenReviewSpec) (authenticationv1.TokenReviewStatus, error) {
		<-release
		return inner(s)
	}, release
}

func TestTokenReviewerStormIsOneReview(t *testing.T) {
	for _, tok := range []string{"good-1", "bad-1"} {
		t.Run(tok, func(t *testing.T) {
			respond, release := blockingHost(tokensOf)
			client, host := newTokenHost(respond)
			tr, err := NewTokenReviewer(client, nil, DefaultTokenReviewConfig())
			require.NoError(t, err)

			const n = 100
			var started, done sync.WaitGroup
			oks := make([]bool, n)
			errs := make([]error, n)
			for i := range n {
				started.Add(1)
				done.Add(1)
				go func() {
					defer done.Done()
					started.Done()
					_, oks[i], errs[i] = tr.Authenticate(bearerRequest(tok))
				}()
			}
			started.Wait()
			close(release)
			done.Wait()
			assert.Equal(t, int32(1), host.calls.Load())
			for i := range n {
				assert.Equal(t, tok == "good-1", oks[i])
				assert.Equal(t, tok == "bad-1", errors.Is(errs[i], errBadCredentials))
			}
		})
	}
}

func TestTokenReviewerWaiterGivesUp(t *testing.T) {
	respond, release := blockingHost(tokensOf)
	client, host := newTokenHost(respond)
	tr, err := NewTokenReviewer(client, nil, DefaultTokenReviewConfig())
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	r := bearerRequest("good-1").WithContext(ctx)
	res := make(chan error, 1)
	go func() { _, _, err := tr.Authenticate(r); res <- err }()
	require.Eventually(t, func() bool { return host.calls.Load() == 1 }, waitBound, time.Millisecond)
	cancel()
	select {
	case err := <-res:
		assert.ErrorIs(t, err, ErrAuthUnavailable)
		assert.ErrorIs(t, err, context.Canceled)
	case <-time.After(waitBound):
		t.Fatal("a cancelled request kept waiting for the review")
	}

	// The review went on for others and its answer is kept.
	close(release)
	_, ok, err := tr.Authenticate(bearerRequest("good-1"))
	require.NoError(t, err)
	assert.True(t, ok)
	assert.Equal(t, int32(1), host.calls.Load())
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

func TestSubjectAccessReviewer(t *testing.T) {
	status := func(st authorizationv1.SubjectAccessReviewStatus, err error) func(authorizationv1.SubjectAccessReviewSpec) (authorizationv1.SubjectAccessReviewStatus, error) {
		return func(authorizationv1.SubjectAccessReviewSpec) (authorizationv1.SubjectAccessReviewStatus, error) {
			return st, err
		}
	}
	tests := []struct {
		name        string
		user        *User
		respond     func(authorizationv1.SubjectAccessReviewSpec) (authorizationv1.SubjectAccessReviewStatus, error)
		wantAllowed bool
		wantReason  string // substring
		wantErr     error
	}{
		{name: "allowed", user: carol, respond: status(authorizationv1.SubjectAccessReviewStatus{Allowed: true}, nil), wantAllowed: true},
		{name: "allowed despite another authorizer's error", user: carol,
			respond: status(authorizationv1.SubjectAccessReviewStatus{Allowed: true, EvaluationError: "webhook timed out"}, nil), wantAllowed: true},
		{name: "denied with reason", user: carol,
			respond: status(authorizationv1.SubjectAccessReviewStatus{Reason: "carol is on leave"}, nil), wantReason: "carol is on leave"},
		{name: "denied without reason", user: carol,
			respond: status(authorizationv1.SubjectAccessReviewStatus{}, nil), wantReason: `"get" on clusters/proxy "alpha" in group backhaul.io`},
		{name: "explicit deny wins", user: carol,
			respond: status(authorizationv1.SubjectAccessReviewStatus{Allowed: true, Denied: true, Reason: "blocked"}, nil), wantReason: "blocked"},
		{name: "evaluation error denies", user: carol,
			respond: status(authorizationv1.SubjectAccessReviewStatus{EvaluationError: "role lookup failed"}, nil), wantReason: "evaluation error: role lookup failed"},
		{name: "host down", user: carol, respond: status(authorizationv1.SubjectAccessReviewStatus{}, errHostDown), wantErr: ErrAuthUnavailable},
		{name: "no user", user: nil, wantReason: "no authenticated user"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			client, host := newAccessHost(tc.respond)
			s, err := NewSubjectAccessReviewer(client, DefaultAccessReviewConfig())
			require.NoError(t, err)
			allowed, reason, err := s.Authorize(context.Background(), tc.user, "alpha")
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
				assert.True(t, apierrors.IsServiceUnavailable(err))
			} else {
				require.NoError(t, err)
			}
			assert.Equal(t, tc.wantAllowed, allowed)
			assert.Contains(t, reason, tc.wantReason)
			if tc.user == nil {
				assert.Zero(t, host.calls.Load())
				return
			}
			assert.Equal(t, authorizationv1.SubjectAccessReviewSpec{
				ResourceAttributes: &authorizationv1.ResourceAttributes{
					Group: "backhaul.io", Resource: "clusters", Subresource: "proxy", Verb: "get", Name: "alpha",
				},
				User: "carol", UID: "uid-carol", Groups: []string{"ops", "dev"},
				Extra: map[string]authorizationv1.ExtraValue{"scopes.example.com": {"read"}},
			}, host.last(t))
		})
	}
}

func TestSubjectAccessReviewerCache(t *testing.T) {
	// Clusters named "deny-*" are denied, "down-*" fail, the rest allowed.
	respond := func(s authorizationv1.SubjectAccessReviewSpec) (authorizationv1.SubjectAccessReviewStatus, error) {
		switch s.ResourceAttributes.Name[:4] {
		case "deny":
			return authorizationv1.SubjectAccessReviewStatus{Reason: "no"}, nil
		case "down":
			return authorizationv1.SubjectAccessReviewStatus{}, errHostDown
		}
		return authorizationv1.SubjectAccessReviewStatus{Allowed: true}, nil
	}
	reordered := &User{Name: "carol", UID: "uid-carol", Groups: []string{"dev", "ops"}, Extra: carol.Extra}
	moreExtra := &User{Name: "carol", UID: "uid-carol", Groups: carol.Groups, Extra: map[string][]string{"scopes.example.com": {"read", "write"}}}
	otherUID := &User{Name: "carol", UID: "uid-carol-2", Groups: carol.Groups, Extra: carol.Extra}
	type step struct {
		after     time.Duration
		user      *User
		cluster   string
		wantCalls int32
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{name: "allowed kept for SuccessTTL", steps: []step{{0, carol, "alpha", 1}, {9 * time.Second, carol, "alpha", 1}, {time.Second, carol, "alpha", 2}}},
		{name: "denied kept for FailureTTL", steps: []step{{0, carol, "deny-a", 1}, {2 * time.Second, carol, "deny-a", 1}, {time.Second, carol, "deny-a", 2}}},
		{name: "API error never kept", steps: []step{{0, carol, "down-a", 1}, {0, carol, "down-a", 2}}},
		{name: "group order is the same subject", steps: []step{{0, carol, "alpha", 1}, {0, reordered, "alpha", 1}}},
		{name: "cluster, extra and uid are part of the key", steps: []step{
			{0, carol, "alpha", 1}, {0, carol, "beta", 2}, {0, moreExtra, "alpha", 3}, {0, otherUID, "alpha", 4}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := clocktesting.NewFakeClock(time.Now())
			client, host := newAccessHost(respond)
			cfg := DefaultAccessReviewConfig()
			cfg.Clock = clk
			s, err := NewSubjectAccessReviewer(client, cfg)
			require.NoError(t, err)
			for i, st := range tc.steps {
				clk.Step(st.after)
				_, _, _ = s.Authorize(context.Background(), st.user, st.cluster)
				assert.Equal(t, st.wantCalls, host.calls.Load(), "after request %d", i)
			}
		})
	}
}

func TestSubjectAccessReviewerStormIsOneReview(t *testing.T) {
	release := make(chan struct{})
	client, host := newAccessHost(func(authorizationv1.SubjectAccessReviewSpec) (authorizationv1.SubjectAccessReviewStatus, error) {
		<-release
		return authorizationv1.SubjectAccessReviewStatus{Allowed: true}, nil
	})
	s, err := NewSubjectAccessReviewer(client, DefaultAccessReviewConfig())
	require.NoError(t, err)
	const n = 100
	var started, done sync.WaitGroup
	allowed := make([]bool, n)
	for i := range n {
		started.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			started.Done()
			allowed[i], _, _ = s.Authorize(context.Background(), carol, "alpha")
		}()
	}
	started.Wait()
	close(release)
	done.Wait()
	assert.Equal(t, int32(1), host.calls.Load())
	assert.NotContains(t, allowed, false)
}

func TestHostAuthMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewHostAuthMetrics(reg)
	client, _ := newTokenHost(tokensOf)
	cfg := DefaultTokenReviewConfig()
	cfg.Metrics = m
	tr, err := NewTokenReviewer(client, nil, cfg)
	require.NoError(t, err)
	for _, tok := range []string{"good-1", "good-1", "bad-1", "down-1"} {
		_, _, _ = tr.Authenticate(bearerRequest(tok))
	}
	for result, want := range map[string]float64{"allowed": 1, "denied": 1, "error": 1} {
		assert.Equal(t, want, promtest.ToFloat64(m.reviews.WithLabelValues("token", result)), result)
	}
	assert.Equal(t, 1.0, promtest.ToFloat64(m.cacheHits.WithLabelValues("token")))
}

// Union stops at the first authenticator that errs, so a host outage must
// not look like the caller's fault to whoever reads the error.
func TestTokenReviewerInUnion(t *testing.T) {
	client, _ := newTokenHost(tokensOf)
	tr, err := NewTokenReviewer(client, nil, DefaultTokenReviewConfig())
	require.NoError(t, err)
	r := bearerRequest("down-1")
	_, ok, err := Union{ClientCerts{}, tr}.Authenticate(r)
	assert.False(t, ok)
	assert.ErrorIs(t, err, ErrAuthUnavailable)
	assert.NotErrorIs(t, err, errBadCredentials)
}
