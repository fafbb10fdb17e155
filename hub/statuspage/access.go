package statuspage

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"
	"k8s.io/utils/clock"
	"k8s.io/utils/lru"

	"backhaul.io/backhaul/hub/auth"
)

// allClusters is the cluster name that asks an Authorizer whether a caller
// may reach every cluster. A SubjectAccessReview without a name is allowed
// by RBAC only through rules without resourceNames, that is for every
// name; AllowAuthenticated allows everything anyway.
const allClusters = ""

// access remembers, per caller, which clusters it may reach, so that a
// page polled every few seconds by a caller of a 10,000-cluster fleet
// costs reviews once per TTL rather than 10,000 per poll. A caller whom
// the host lets reach every cluster costs one review per TTL; one limited
// to some clusters costs one per cluster (through the hub's review
// cache), at most workers at a time over all callers, so a page cannot
// flood the host API.
type access struct {
	authz   auth.Authorizer
	ttl     time.Duration
	workers int
	sem     *semaphore.Weighted
	clock   clock.PassiveClock
	metrics *Metrics

	mu     sync.Mutex
	grants *lru.Cache // caller key → *grant
	ids    atomic.Uint64
}

func newAccess(authz auth.Authorizer, ttl time.Duration, workers, callers int, clk clock.PassiveClock, m *Metrics) *access {
	return &access{authz: authz, ttl: ttl, workers: workers, sem: semaphore.NewWeighted(int64(workers)),
		clock: clk, metrics: m, grants: lru.New(callers)}
}

// grant is what one caller may reach, as reviewed within the TTL. Its
// mutex is held while it is extended and read, so two polls of one
// caller never review the same clusters twice.
type grant struct {
	key     string
	id      uint64 // tells grants of one caller apart (ETags)
	expires time.Time

	mu      sync.Mutex
	checked bool            // the all-clusters review was answered
	all     bool            // the caller may reach every cluster
	may     map[string]bool // per cluster, when !all
}

// lock returns u's grant, locked, with the all-clusters review done.
// Unlock it with g.mu.Unlock.
func (a *access) lock(ctx context.Context, u *auth.User) (*grant, error) {
	key, err := callerKey(u)
	if err != nil {
		return nil, err
	}
	now := a.clock.Now()
	a.mu.Lock()
	var g *grant
	if v, ok := a.grants.Get(key); ok && now.Before(v.(*grant).expires) {
		g = v.(*grant)
	} else {
		g = &grant{key: key, id: a.ids.Add(1), expires: now.Add(a.ttl), may: map[string]bool{}}
		a.grants.Add(key, g)
	}
	a.mu.Unlock()
	g.mu.Lock()
	if !g.checked {
		all, err := a.review(ctx, u, allClusters)
		if err != nil {
			g.mu.Unlock()
			return nil, err
		}
		g.checked, g.all = true, all
	}
	return g, nil
}

// extend reviews the clusters of names g has no answer for yet. g must
// be locked. Answers found before an error are kept.
func (a *access) extend(ctx context.Context, u *auth.User, g *grant, names []string) error {
	if g.all {
		return nil
	}
	var todo []string
	for _, n := range names {
		if _, ok := g.may[n]; !ok {
			todo = append(todo, n)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	answers := make([]int8, len(todo)) // 0 unknown, 1 yes, -1 no
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(a.workers)
	for i, n := range todo {
		eg.Go(func() error {
			ok, err := a.review(ectx, u, n)
			if err != nil {
				return err
			}
			answers[i] = map[bool]int8{true: 1, false: -1}[ok]
			return nil
		})
	}
	err := eg.Wait()
	for i, n := range todo {
		if answers[i] != 0 {
			g.may[n] = answers[i] > 0
		}
	}
	return err
}

// allowed says whether g lets its caller reach cluster; g must be locked
// and extended to cluster.
func (g *grant) allowed(cluster string) bool { return g.all || g.may[cluster] }

// review asks the authorizer, holding one of the page's review slots.
func (a *access) review(ctx context.Context, u *auth.User, cluster string) (bool, error) {
	if err := a.sem.Acquire(ctx, 1); err != nil {
		return false, fmt.Errorf("%w: status page: %w", auth.ErrUnavailable, err)
	}
	defer a.sem.Release(1)
	a.metrics.reviewed(cluster == allClusters)
	ok, _, err := a.authz.Authorize(ctx, u, cluster)
	if err != nil {
		if !errors.Is(err, auth.ErrUnavailable) {
			err = fmt.Errorf("%w: %w", auth.ErrUnavailable, err)
		}
		return false, err
	}
	return ok, nil
}

// callerKey names everything an authorization decision depends on.
// Groups are sorted because their order changes no decision; json.Marshal
// sorts map keys and quotes strings, so the encoding is unambiguous.
func callerKey(u *auth.User) (string, error) {
	groups := slices.Clone(u.Groups)
	slices.Sort(groups)
	b, err := json.Marshal(struct {
		N, U string
		G    []string
		E    map[string][]string
	}{u.Name, u.UID, groups, u.Extra})
	if err != nil {
		return "", fmt.Errorf("status page: caller key: %w", err)
	}
	d := sha256.Sum256(b)
	return string(d[:]), nil
}
