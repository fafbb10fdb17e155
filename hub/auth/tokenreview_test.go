package auth

import (
	"context"
	"crypto/sha256"
	"errors"
	"sync"
	"testing"
	"time"

	"backhaul.io/backhaul/hub/internal/hubtest"
	clocktesting "k8s.io/utils/clock/testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authenticationv1 "k8s.io/api/authentication/v1"
)

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
		{name: "rejected carries status error", header: "Bearer bad-1", wantErr: ErrBadCredentials, errText: "token expired", wantCalls: 1},
		{name: "rejected without status error", header: "Bearer x",
			respond: func(authenticationv1.TokenReviewSpec) (authenticationv1.TokenReviewStatus, error) {
				return authenticationv1.TokenReviewStatus{}, nil
			}, wantErr: ErrBadCredentials, errText: "not authenticated", wantCalls: 1},
		{name: "authenticated without user name", header: "Bearer x",
			respond: func(authenticationv1.TokenReviewSpec) (authenticationv1.TokenReviewStatus, error) {
				return authenticationv1.TokenReviewStatus{Authenticated: true}, nil
			}, wantErr: ErrBadCredentials, errText: "without a user name", wantCalls: 1},
		{name: "audience honoured", header: "Bearer good-2", audiences: []string{"backhaul"}, wantUser: alice, wantOK: true, wantCalls: 1},
		{name: "audience ignored by the host", header: "Bearer x", audiences: []string{"backhaul"},
			respond: func(s authenticationv1.TokenReviewSpec) (authenticationv1.TokenReviewStatus, error) {
				return authenticationv1.TokenReviewStatus{Authenticated: true, User: authenticationv1.UserInfo{Username: "alice"}}, nil
			}, wantErr: ErrBadCredentials, errText: "audiences", wantCalls: 1},
		{name: "host down is not bad credentials", header: "Bearer down-1", wantErr: ErrUnavailable, errText: "etcd is sad", wantCalls: 1},
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
			if errors.Is(tc.wantErr, ErrUnavailable) {
				assert.NotErrorIs(t, err, ErrBadCredentials)
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
				assert.Equal(t, tok == "bad-1", errors.Is(errs[i], ErrBadCredentials))
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
	require.Eventually(t, func() bool { return host.calls.Load() == 1 }, hubtest.WaitBound, time.Millisecond)
	cancel()
	select {
	case err := <-res:
		assert.ErrorIs(t, err, ErrUnavailable)
		assert.ErrorIs(t, err, context.Canceled)
	case <-time.After(hubtest.WaitBound):
		t.Fatal("a cancelled request kept waiting for the review")
	}

	// The review went on for others and its answer is kept.
	close(release)
	_, ok, err := tr.Authenticate(bearerRequest("good-1"))
	require.NoError(t, err)
	assert.True(t, ok)
	assert.Equal(t, int32(1), host.calls.Load())
}

func TestTokenReviewerInUnion(t *testing.T) {
	client, _ := newTokenHost(tokensOf)
	tr, err := NewTokenReviewer(client, nil, DefaultTokenReviewConfig())
	require.NoError(t, err)
	r := bearerRequest("down-1")
	_, ok, err := Union{NewClientCerts(), tr}.Authenticate(r)
	assert.False(t, ok)
	assert.ErrorIs(t, err, ErrUnavailable)
	assert.NotErrorIs(t, err, ErrBadCredentials)
}
