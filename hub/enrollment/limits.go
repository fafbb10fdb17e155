package enrollment

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"k8s.io/utils/lru"
)

// Limits bound the unauthenticated enrollment endpoints (enroll and the
// onboarding status poll): each source address, and all sources together.
// A rate of 0 turns that limit off.
//
// A source is the TCP peer address, never X-Forwarded-For: the hub
// terminates TLS itself (agents present client certificates on the same
// listener), so whatever sits in front of it is a layer-4 balancer and
// the peer address is the client's, or the balancer's when it rewrites
// sources (keep them, e.g. externalTrafficPolicy: Local). IPv6 sources
// count per /64, the least a site is given, so one site cannot become
// 2^64 sources.
type Limits struct {
	// SourceRate is requests per second from one source, after a burst
	// of SourceBurst.
	SourceRate  float64
	SourceBurst int
	// GlobalRate and GlobalBurst bound all sources together: an attacker
	// with many addresses still gets no more than this.
	GlobalRate  float64
	GlobalBurst int
	// MaxSources is how many sources are remembered; past it the least
	// recently seen is forgotten (and starts again with a full burst),
	// so many addresses cannot grow the hub's memory.
	MaxSources int
}

// DefaultLimits are generous for real onboarding (onboard.sh polls status
// every 2 s; an agent enrolls once, then backs off for at least 5 s) and
// for a few sites behind one NAT address.
func DefaultLimits() Limits {
	return Limits{SourceRate: 1, SourceBurst: 20, GlobalRate: 50, GlobalBurst: 200, MaxSources: 10000}
}

// Validate says what is wrong with l.
func (l Limits) Validate() error {
	var errs []error
	if l.SourceRate < 0 || l.GlobalRate < 0 || math.IsNaN(l.SourceRate) || math.IsNaN(l.GlobalRate) {
		errs = append(errs, errors.New("enrollment rates must not be negative"))
	}
	if (l.SourceRate > 0 && l.SourceBurst < 1) || (l.GlobalRate > 0 && l.GlobalBurst < 1) {
		errs = append(errs, errors.New("an enrollment rate limit needs a burst of at least 1"))
	}
	if l.SourceRate > 0 && l.MaxSources < 1 {
		errs = append(errs, errors.New("a per-source enrollment limit needs at least one remembered source"))
	}
	return errors.Join(errs...)
}

// Limit scopes, also the metric's result values (with a prefix).
const (
	scopeSource = "source"
	scopeGlobal = "global"
)

// RateLimitError is a refusal by Limits; RetryAfter is when a request
// from the same source would next be allowed.
type RateLimitError struct {
	Scope      string // "source" or "global"
	RetryAfter time.Duration
}

func (e *RateLimitError) Error() string {
	who := "this address"
	if e.Scope == scopeGlobal {
		who = "all addresses"
	}
	return fmt.Sprintf("too many enrollment requests from %s; retry in %ss", who, retrySeconds(e.RetryAfter))
}

// retrySeconds is a Retry-After value: whole seconds, at least 1.
func retrySeconds(d time.Duration) string {
	return fmt.Sprintf("%d", max(1, int64(math.Ceil(d.Seconds()))))
}

// limiter applies Limits.
type limiter struct {
	cfg    Limits
	global *rate.Limiter
	now    func() time.Time

	mu      sync.Mutex // makes find-or-add on sources one step
	sources *lru.Cache // source key → *rate.Limiter
}

func newLimiter(cfg Limits, now func() time.Time) *limiter {
	l := &limiter{cfg: cfg, now: now}
	if cfg.GlobalRate > 0 {
		l.global = rate.NewLimiter(rate.Limit(cfg.GlobalRate), cfg.GlobalBurst)
	}
	if cfg.SourceRate > 0 {
		l.sources = lru.New(cfg.MaxSources)
	}
	return l
}

// allow takes one request from remoteAddr out of both limits, or returns
// a *RateLimitError and takes nothing.
func (l *limiter) allow(remoteAddr string) error {
	now := l.now()
	var src *rate.Reservation
	if l.sources != nil {
		src = l.source(sourceKey(remoteAddr)).ReserveN(now, 1)
		if d := src.DelayFrom(now); d > 0 {
			src.CancelAt(now)
			return &RateLimitError{Scope: scopeSource, RetryAfter: d}
		}
	}
	if l.global != nil {
		g := l.global.ReserveN(now, 1)
		if d := g.DelayFrom(now); d > 0 {
			g.CancelAt(now)
			if src != nil {
				// Refused all the same: the source keeps its token.
				src.CancelAt(now)
			}
			return &RateLimitError{Scope: scopeGlobal, RetryAfter: d}
		}
	}
	return nil
}

func (l *limiter) source(key string) *rate.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	if v, ok := l.sources.Get(key); ok {
		return v.(*rate.Limiter)
	}
	lim := rate.NewLimiter(rate.Limit(l.cfg.SourceRate), l.cfg.SourceBurst)
	l.sources.Add(key, lim)
	return lim
}

// trackedSources is how many sources have a limiter now.
func (l *limiter) trackedSources() int {
	if l.sources == nil {
		return 0
	}
	return l.sources.Len()
}

// sourceKey is the limited unit of a peer address: the IPv4 address, or
// the IPv6 /64. Anything unparsable (not from a TCP listener) is its own
// key.
func sourceKey(remoteAddr string) string {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return remoteAddr
	}
	ip = ip.Unmap().WithZone("")
	if ip.Is4() {
		return ip.String()
	}
	return netip.PrefixFrom(ip, 64).Masked().String()
}
