package auth

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"
	"k8s.io/utils/clock"
	"k8s.io/utils/lru"
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
	Metrics *ReviewMetrics
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
		return zero, fmt.Errorf("%w: waiting for %s review: %w", ErrUnavailable, c.kind, ctx.Err())
	}
}

func (c *reviewCache[V]) store(key string, v V, ttl time.Duration) {
	if ttl > 0 {
		c.entries.Add(key, cacheEntry[V]{val: v, expires: c.clock.Now().Add(ttl)})
	}
}

// ReviewMetrics count reviews sent to the host cluster and answers served
// from cache; labels are closed sets.
type ReviewMetrics struct {
	reviews   *prometheus.CounterVec
	cacheHits *prometheus.CounterVec
}

// NewReviewMetrics registers the series on reg.
func NewReviewMetrics(reg prometheus.Registerer) *ReviewMetrics {
	m := &ReviewMetrics{
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

func (m *ReviewMetrics) reviewed(kind, result string) {
	if m != nil {
		m.reviews.WithLabelValues(kind, result).Inc()
	}
}

func (m *ReviewMetrics) cacheHit(kind string) {
	if m != nil {
		m.cacheHits.WithLabelValues(kind).Inc()
	}
}
