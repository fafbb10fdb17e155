package frontend

import (
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"backhaul.io/backhaul/hub/auth"
	"backhaul.io/backhaul/hub/session"
	"backhaul.io/backhaul/pkg/logging"
)

// Reasons a new stream was refused by a limit: label values of
// backhaul_hub_errors_total next to admission's, so one series still says
// why any stream was not carried.
const (
	ReasonCallerStreams  = "caller_streams"
	ReasonClusterStreams = "cluster_streams"
	ReasonMemory         = "memory"
)

// LimitsLogName names the limiter's logger.
const LimitsLogName = "limits"

// Front ends, the label values of backhaul_hub_caller_streams.
const (
	frontEndGateway = "gateway"
	frontEndConnect = "connect"
)

// Default limits. A stalled stream holds up to one stream window (1 MiB
// by default) in the hub, so PerCaller × window is what one caller's
// unread streams can pin: 100 MiB, a tenth of the 1 GiB docs/ha.md
// advises, and far above what kubectl or a controller speaking HTTP/2
// through CONNECT (one stream per connection, many requests in it)
// needs. PerCluster protects one member's agent and API server from
// every caller together.
const (
	DefaultMaxStreamsPerCaller  = 100
	DefaultMaxStreamsPerCluster = 1000
	DefaultLimitRetryAfter      = 2 * time.Second
)

// LimitsConfig bounds the streams callers hold through this replica.
// Each bound is per replica: behind a load balancer of N replicas a
// caller may hold up to N times as many.
type LimitsConfig struct {
	// PerCaller bounds the streams one caller (authenticated user name)
	// holds at once, across front ends and clusters; 0: no bound.
	PerCaller int
	// PerCluster bounds the streams to one cluster at once, every caller
	// together; 0: no bound.
	PerCluster int
	// RetryAfter is what a caller refused by a limit is told to wait.
	RetryAfter time.Duration
	// Memory, when set, refuses new streams while the process is above
	// its budget; streams already open go on.
	Memory *MemoryBudget
	// Metrics receives the in-flight gauge; refusals are counted by the
	// front end that answers them.
	Metrics *Metrics
	Log     hclog.Logger
}

// DefaultLimitsConfig has the default bounds and no memory budget.
func DefaultLimitsConfig() LimitsConfig {
	return LimitsConfig{
		PerCaller:  DefaultMaxStreamsPerCaller,
		PerCluster: DefaultMaxStreamsPerCluster,
		RetryAfter: DefaultLimitRetryAfter,
	}
}

// Validate reports settings that cannot work.
func (c *LimitsConfig) Validate() error {
	var errs []error
	if c.PerCaller < 0 || c.PerCluster < 0 {
		errs = append(errs, errors.New("stream limits must not be negative (0: no limit)"))
	}
	if c.RetryAfter < time.Second {
		errs = append(errs, errors.New("limits: RetryAfter must be at least a second (Retry-After counts whole seconds)"))
	}
	if c.Metrics == nil || c.Log == nil {
		errs = append(errs, errors.New("limits: Metrics and Log are required"))
	}
	return errors.Join(errs...)
}

// Limits counts the streams callers hold through the gateway and CONNECT
// and refuses new ones beyond the bounds or the memory budget. A stream is
// counted from admission until the front end is done with it: a gateway
// request until its response (a watch, a log stream, an exec) ends, a
// CONNECT tunnel until either side closes.
//
// What is counted where with several replicas: a stream is counted, once,
// by the replica whose front end the caller reached, which is where the
// caller was authenticated. A replica that carries a stream forwarded by a
// peer (tunnel.KindForward) does not count it again: the caller's limit
// was applied upstream, and a CONNECT stream carries no identity it could
// key by. The hub's own streams (propagation, probes) never pass through
// the front ends and are not counted.
type Limits struct {
	cfg     LimitsConfig
	refused *logging.Limited

	mu       sync.Mutex
	callers  map[string]int
	clusters map[string]int
}

// NewLimits returns the limiter.
func NewLimits(cfg LimitsConfig) (*Limits, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if b := cfg.Memory; b != nil {
		cfg.Metrics.memoryBudget(b.Limit(), b.RefuseAbove())
	}
	return &Limits{
		cfg:      cfg,
		refused:  logging.NewLimited(cfg.Log, time.Second, 10),
		callers:  map[string]int{},
		clusters: map[string]int{},
	}, nil
}

// admit is the front ends' hook, right after admission: it passes an
// earlier refusal through, and otherwise takes a slot for u's stream along
// route. release is never nil; call it when the stream is done. A nil
// Limits admits everything.
func (l *Limits) admit(frontEnd string, u *auth.User, route *session.Route, ref *auth.Refusal) (release func(), _ *auth.Refusal) {
	if ref != nil || l == nil {
		return func() {}, ref
	}
	return l.Acquire(frontEnd, u.Name, route.Cluster())
}

// Acquire takes a slot for a new stream of caller to cluster through
// frontEnd, or refuses it: 503 while the process is above its memory
// budget, 429 when the caller or the cluster holds its limit, each with
// RetryAfter. release gives the slot back; it may be called more than
// once.
func (l *Limits) Acquire(frontEnd, caller, cluster string) (release func(), _ *auth.Refusal) {
	if b := l.cfg.Memory; b != nil {
		if inUse, over := b.Over(); over {
			l.refused.Warn("refusing new streams: memory above budget", "in_use_bytes", inUse,
				"budget_bytes", b.RefuseAbove(), "limit_bytes", b.Limit(), "limit_source", b.Source(), "caller", caller, "cluster", cluster)
			return func() {}, &auth.Refusal{
				Code: http.StatusServiceUnavailable, Reason: ReasonMemory, RetryAfter: l.cfg.RetryAfter,
				Message: "the hub is short of memory and takes no new streams now; streams already open go on",
			}
		}
	}
	l.mu.Lock()
	switch {
	case l.cfg.PerCaller > 0 && l.callers[caller] >= l.cfg.PerCaller:
		l.mu.Unlock()
		l.refused.Warn("refusing a stream: caller at its limit", "caller", caller, "cluster", cluster, "limit", l.cfg.PerCaller)
		return func() {}, &auth.Refusal{
			Code: http.StatusTooManyRequests, Reason: ReasonCallerStreams, RetryAfter: l.cfg.RetryAfter,
			Message: fmt.Sprintf("too many concurrent requests: %s holds %d streams through this hub replica, its limit", caller, l.cfg.PerCaller),
		}
	case l.cfg.PerCluster > 0 && l.clusters[cluster] >= l.cfg.PerCluster:
		l.mu.Unlock()
		l.refused.Warn("refusing a stream: cluster at its limit", "caller", caller, "cluster", cluster, "limit", l.cfg.PerCluster)
		return func() {}, &auth.Refusal{
			Code: http.StatusTooManyRequests, Reason: ReasonClusterStreams, RetryAfter: l.cfg.RetryAfter,
			Message: fmt.Sprintf("too many concurrent requests: cluster %s carries %d streams through this hub replica, its limit", cluster, l.cfg.PerCluster),
		}
	}
	l.callers[caller]++
	l.clusters[cluster]++
	l.mu.Unlock()
	l.cfg.Metrics.callerStreams(frontEnd, 1)
	var done atomic.Bool
	return func() {
		if done.Swap(true) {
			return
		}
		l.mu.Lock()
		// Zero counts are deleted, so the maps hold only callers and
		// clusters with open streams.
		decrement(l.callers, caller)
		decrement(l.clusters, cluster)
		l.mu.Unlock()
		l.cfg.Metrics.callerStreams(frontEnd, -1)
	}, nil
}

// Held is how many streams caller and cluster hold now (tests, status).
func (l *Limits) Held(caller, cluster string) (callerStreams, clusterStreams int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.callers[caller], l.clusters[cluster]
}

func decrement(m map[string]int, k string) {
	if m[k] <= 1 {
		delete(m, k)
		return
	}
	m[k]--
}
