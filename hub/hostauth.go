package hub

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"
	"k8s.io/utils/lru"

	backhaulv1alpha1 "backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
)

// ErrAuthUnavailable means the hub's host cluster could not answer a
// TokenReview or SubjectAccessReview. It says nothing about the caller's
// credentials, so a front end should answer 503 rather than 401/403, and the
// caller should retry.
var ErrAuthUnavailable = errors.New("host cluster authentication/authorization unavailable")

var (
	_ Authenticator = (*TokenReviewer)(nil)
	_ Authorizer    = (*SubjectAccessReviewer)(nil)
)

// CacheConfig bounds how long and how many review answers are kept. A
// reconnect storm of agents' controllers must not become a storm of reviews
// against the host API server.
type CacheConfig struct {
	// SuccessTTL keeps authenticated / allowed answers.
	SuccessTTL time.Duration
	// FailureTTL keeps rejected / denied answers; shorter, so a newly
	// granted permission takes effect quickly.
	FailureTTL time.Duration
	// Size is the most answers kept; the least recently used go first.
	Size int
	// Timeout bounds one review. It is not tied to any one request, because
	// every concurrent request with the same key waits on the same review.
	Timeout time.Duration
	// Clock is the wall clock when nil; tests inject a fake.
	Clock clock.PassiveClock
	// Metrics may be nil.
	Metrics *HostAuthMetrics
}

// DefaultTokenReviewConfig is the cache for TokenReviews.
func DefaultTokenReviewConfig() CacheConfig {
	return CacheConfig{SuccessTTL: 10 * time.Second, FailureTTL: 3 * time.Second, Size: 10000, Timeout: 10 * time.Second}
}

// DefaultAccessReviewConfig is the cache for SubjectAccessReviews.
func DefaultAccessReviewConfig() CacheConfig {
	return CacheConfig{SuccessTTL: 10 * time.Second, FailureTTL: 3 * time.Second, Size: 10000, Timeout: 10 * time.Second}
}

// Validate reports settings that cannot work. A zero TTL disables caching
// of that kind of answer; singleflight still applies.
func (c CacheConfig) Validate() error {
	var errs []error
	if c.SuccessTTL < 0 || c.FailureTTL < 0 {
		errs = append(errs, errors.New("cache TTLs must not be negative"))
	}
	if c.Size <= 0 {
		errs = append(errs, errors.New("cache size must be positive"))
	}
	if c.Timeout <= 0 {
		errs = append(errs, errors.New("review timeout must be positive"))
	}
	return errors.Join(errs...)
}

// TokenReviewer authenticates bearer tokens with a TokenReview on the hub's
// host cluster, so callers can use service-account or OIDC tokens the host
// already trusts.
type TokenReviewer struct {
	client    kubernetes.Interface
	audiences []string
	cache     *reviewCache[tokenResult]
}

type tokenResult struct {
	user   *User
	reject error // wraps errBadCredentials
}

// NewTokenReviewer reviews tokens through client. With audiences set, a
// token is accepted only if the host says it is valid for one of them.
func NewTokenReviewer(client kubernetes.Interface, audiences []string, cfg CacheConfig) (*TokenReviewer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("token review: %w", err)
	}
	return &TokenReviewer{client: client, audiences: slices.Clone(audiences), cache: newReviewCache[tokenResult]("token", cfg)}, nil
}

// Authenticate implements Authenticator. Errors wrap errBadCredentials when
// the host rejected the token and ErrAuthUnavailable when it could not say.
func (t *TokenReviewer) Authenticate(r *http.Request) (*User, bool, error) {
	tok, ok := bearer(r.Header.Get("Authorization"))
	if !ok {
		return nil, false, nil
	}
	// Only the digest is kept, so a heap dump of the cache holds no tokens.
	d := sha256.Sum256([]byte(tok))
	res, err := t.cache.get(r.Context(), string(d[:]), func(ctx context.Context) (tokenResult, bool, error) {
		return t.review(ctx, tok)
	})
	if err != nil {
		return nil, false, err
	}
	if res.reject != nil {
		return nil, false, res.reject
	}
	return copyUser(res.user), true, nil
}

func (t *TokenReviewer) review(ctx context.Context, tok string) (tokenResult, bool, error) {
	tr := &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: tok, Audiences: t.audiences}}
	out, err := t.client.AuthenticationV1().TokenReviews().Create(ctx, tr, metav1.CreateOptions{})
	if err != nil {
		return tokenResult{}, false, fmt.Errorf("%w: tokenreview: %w", ErrAuthUnavailable, err)
	}
	st := out.Status
	if !st.Authenticated {
		msg := st.Error
		if msg == "" {
			msg = "token not authenticated by the host cluster"
		}
		return tokenResult{reject: fmt.Errorf("%w: %s", errBadCredentials, msg)}, false, nil
	}
	// The TokenReview API asks audience-aware clients to check this: a
	// reviewer that ignores spec.audiences would otherwise accept any token.
	if len(t.audiences) > 0 && !slices.ContainsFunc(st.Audiences, func(a string) bool { return slices.Contains(t.audiences, a) }) {
		return tokenResult{reject: fmt.Errorf("%w: token is not valid for audiences %v", errBadCredentials, t.audiences)}, false, nil
	}
	if st.User.Username == "" {
		return tokenResult{reject: fmt.Errorf("%w: host cluster authenticated the token without a user name", errBadCredentials)}, false, nil
	}
	u := &User{Name: st.User.Username, UID: st.User.UID, Groups: slices.Clone(st.User.Groups)}
	if len(st.User.Extra) > 0 {
		u.Extra = make(map[string][]string, len(st.User.Extra))
		for k, v := range st.User.Extra {
			u.Extra[k] = slices.Clone(v)
		}
	}
	return tokenResult{user: u}, true, nil
}

// SubjectAccessReviewer authorizes callers with a SubjectAccessReview on the
// hub's host cluster: a caller reaches cluster NAME if host RBAC grants "get"
// on clusters/proxy NAME in group backhaul.io.
type SubjectAccessReviewer struct {
	client kubernetes.Interface
	cache  *reviewCache[accessResult]
}

type accessResult struct {
	allowed bool
	reason  string
}

// NewSubjectAccessReviewer reviews access through client.
func NewSubjectAccessReviewer(client kubernetes.Interface, cfg CacheConfig) (*SubjectAccessReviewer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("access review: %w", err)
	}
	return &SubjectAccessReviewer{client: client, cache: newReviewCache[accessResult]("access", cfg)}, nil
}

// Authorize implements Authorizer. Errors wrap ErrAuthUnavailable.
func (s *SubjectAccessReviewer) Authorize(ctx context.Context, u *User, cluster string) (bool, string, error) {
	if u == nil {
		return false, "no authenticated user", nil
	}
	key, err := accessKey(u, cluster)
	if err != nil {
		return false, "", err
	}
	res, err := s.cache.get(ctx, key, func(ctx context.Context) (accessResult, bool, error) {
		return s.review(ctx, u, cluster)
	})
	if err != nil {
		return false, "", err
	}
	return res.allowed, res.reason, nil
}

func (s *SubjectAccessReviewer) review(ctx context.Context, u *User, cluster string) (accessResult, bool, error) {
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		ResourceAttributes: &authorizationv1.ResourceAttributes{
			Group:       backhaulv1alpha1.GroupName,
			Resource:    backhaulv1alpha1.ResourceClusters,
			Subresource: backhaulv1alpha1.SubresourceProxy,
			Verb:        "get",
			Name:        cluster,
		},
		User:   u.Name,
		UID:    u.UID,
		Groups: slices.Clone(u.Groups),
	}}
	if len(u.Extra) > 0 {
		sar.Spec.Extra = make(map[string]authorizationv1.ExtraValue, len(u.Extra))
		for k, v := range u.Extra {
			sar.Spec.Extra[k] = slices.Clone(v)
		}
	}
	out, err := s.client.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
	if err != nil {
		return accessResult{}, false, fmt.Errorf("%w: subjectaccessreview: %w", ErrAuthUnavailable, err)
	}
	st := out.Status
	// An authorizer that allowed despite another's evaluation error has
	// still allowed: the error only explains a denial.
	if st.Allowed && !st.Denied {
		return accessResult{allowed: true}, true, nil
	}
	reason := st.Reason
	switch {
	case reason != "" && st.EvaluationError != "":
		reason += "; evaluation error: " + st.EvaluationError
	case st.EvaluationError != "":
		reason = "evaluation error: " + st.EvaluationError
	case reason == "":
		reason = fmt.Sprintf(`no rule on the hub grants "get" on %s/%s %q in group %s`,
			backhaulv1alpha1.ResourceClusters, backhaulv1alpha1.SubresourceProxy, cluster, backhaulv1alpha1.GroupName)
	}
	return accessResult{reason: reason}, false, nil
}

// accessKey names everything the review depends on. Groups are sorted
// because their order does not change a decision; the digest keeps keys of
// users in many groups small.
func accessKey(u *User, cluster string) (string, error) {
	groups := slices.Clone(u.Groups)
	slices.Sort(groups)
	// json.Marshal sorts map keys and quotes strings, so the encoding is
	// unambiguous without a hand-written separator scheme.
	b, err := json.Marshal(struct {
		N, U, C string
		G       []string
		E       map[string][]string
	}{u.Name, u.UID, cluster, groups, u.Extra})
	if err != nil {
		return "", fmt.Errorf("access cache key: %w", err)
	}
	d := sha256.Sum256(b)
	return string(d[:]), nil
}

func copyUser(u *User) *User {
	cp := &User{Name: u.Name, UID: u.UID, Groups: slices.Clone(u.Groups)}
	if u.Extra != nil {
		cp.Extra = make(map[string][]string, len(u.Extra))
		for k, v := range u.Extra {
			cp.Extra[k] = slices.Clone(v)
		}
	}
	return cp
}

// reviewCache keeps review answers for a while and collapses concurrent
// reviews of one key into one call. Errors from the API are never kept:
// the next request should try again.
type reviewCache[V any] struct {
	kind    string // metrics label
	cfg     CacheConfig
	clock   clock.PassiveClock
	entries *lru.Cache
	flights singleflight.Group
}

type cacheEntry[V any] struct {
	val     V
	expires time.Time
}

func newReviewCache[V any](kind string, cfg CacheConfig) *reviewCache[V] {
	c := &reviewCache[V]{kind: kind, cfg: cfg, clock: cfg.Clock, entries: lru.New(cfg.Size)}
	if c.clock == nil {
		c.clock = clock.RealClock{}
	}
	return c
}

func (c *reviewCache[V]) lookup(key string) (V, bool) {
	if v, ok := c.entries.Get(key); ok {
		e := v.(cacheEntry[V])
		if c.clock.Now().Before(e.expires) {
			c.cfg.Metrics.cacheHit(c.kind)
			return e.val, true
		}
		// An expired entry is left for store to overwrite or the LRU to
		// evict: removing it here could drop a fresh one stored meanwhile.
	}
	var zero V
	return zero, false
}

// get returns key's answer from the cache or from review, which reports
// whether its answer is positive (kept for SuccessTTL) or not (FailureTTL).
func (c *reviewCache[V]) get(ctx context.Context, key string, review func(context.Context) (V, bool, error)) (V, error) {
	if v, ok := c.lookup(key); ok {
		return v, nil
	}
	ch := c.flights.DoChan(key, func() (any, error) {
		// A flight that finished between our miss and DoChan has stored
		// its answer; without this check a storm could cause a second review.
		if v, ok := c.lookup(key); ok {
			return v, nil
		}
		// The review outlives a waiter that gives up, since others may be
		// waiting on it, but not the timeout.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.Timeout)
		defer cancel()
		v, positive, err := review(rctx)
		switch {
		case err != nil:
			c.cfg.Metrics.reviewed(c.kind, "error")
			return v, err
		case positive:
			c.cfg.Metrics.reviewed(c.kind, "allowed")
			c.store(key, v, c.cfg.SuccessTTL)
		default:
			c.cfg.Metrics.reviewed(c.kind, "denied")
			c.store(key, v, c.cfg.FailureTTL)
		}
		return v, nil
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			var zero V
			return zero, res.Err
		}
		return res.Val.(V), nil
	case <-ctx.Done():
		var zero V
		return zero, fmt.Errorf("%w: waiting for %s review: %w", ErrAuthUnavailable, c.kind, ctx.Err())
	}
}

func (c *reviewCache[V]) store(key string, v V, ttl time.Duration) {
	if ttl > 0 {
		c.entries.Add(key, cacheEntry[V]{val: v, expires: c.clock.Now().Add(ttl)})
	}
}

// HostAuthMetrics count reviews sent to the host cluster and answers served
// from cache; labels are closed sets.
type HostAuthMetrics struct {
	reviews   *prometheus.CounterVec
	cacheHits *prometheus.CounterVec
}

// NewHostAuthMetrics registers the series on reg.
func NewHostAuthMetrics(reg prometheus.Registerer) *HostAuthMetrics {
	m := &HostAuthMetrics{
		reviews: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backhaul_hub_host_reviews_total",
			Help: "TokenReviews (review=token) and SubjectAccessReviews (review=access) sent to the host cluster, by result.",
		}, []string{"review", "result"}),
		cacheHits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backhaul_hub_host_review_cache_hits_total",
			Help: "Review answers served from the hub's cache.",
		}, []string{"review"}),
	}
	reg.MustRegister(m.reviews, m.cacheHits)
	return m
}

func (m *HostAuthMetrics) reviewed(kind, result string) {
	if m != nil {
		m.reviews.WithLabelValues(kind, result).Inc()
	}
}

func (m *HostAuthMetrics) cacheHit(kind string) {
	if m != nil {
		m.cacheHits.WithLabelValues(kind).Inc()
	}
}
