package auth

import (
	"context"
	"sync"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	clocktesting "k8s.io/utils/clock/testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authorizationv1 "k8s.io/api/authorization/v1"
)

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
		{name: "host down", user: carol, respond: status(authorizationv1.SubjectAccessReviewStatus{}, errHostDown), wantErr: ErrUnavailable},
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

func TestReviewMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewReviewMetrics(reg)
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
