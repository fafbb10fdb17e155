package session

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Health is what the prober last measured of a cluster through this
// replica's session of it.
type Health struct {
	// RTT is the newest session's round trip.
	RTT time.Duration
	// Ready is whether the member's /readyz answered ok; Message says why
	// not, or what it said.
	Ready   bool
	Message string
	// KubernetesVersion is the member's gitVersion, looked up when the
	// session is new and every VersionEvery after.
	KubernetesVersion string
	At                time.Time
	versionAt         time.Time
}

// ProberConfig is what the prober needs.
type ProberConfig struct {
	// Interval between two probes of one cluster.
	Interval time.Duration
	// VersionEvery is how often /version is asked again.
	VersionEvery time.Duration
	// Timeout bounds one probe.
	Timeout time.Duration
	// Workers bounds concurrent probes.
	Workers int
	// Identity is the Impersonate-* headers probes carry (the agent serves
	// no request without a caller identity).
	Identity http.Header
	// OnChange is called, never concurrently, when a cluster's readiness
	// or version changes. It must not block.
	OnChange func(cluster string)
	// Tracker, when set, keeps each cluster's round trips (moving
	// average, percentile, the hour's history) from the probes.
	Tracker *Tracker
	Log     hclog.Logger
}

// Prober measures, in the background and never on a request path, each
// cluster this replica holds a session of: the session's round trip, and
// the member's /readyz and version through it. Pages and status writers
// read what it cached.
type Prober struct {
	cfg    ProberConfig
	dialer *Dialer

	kick   chan struct{}
	mu     sync.Mutex
	health map[string]Health
	soon   map[string]bool // clusters that gained a session, to probe now
}

// NewProber probes the registry's clusters through dialer; a cluster that
// gains a session is probed at once.
func NewProber(dialer *Dialer, cfg ProberConfig) *Prober {
	if cfg.Workers <= 0 {
		cfg.Workers = 8
	}
	p := &Prober{cfg: cfg, dialer: dialer, health: map[string]Health{}, soon: map[string]bool{}, kick: make(chan struct{}, 1)}
	dialer.registry.Watch(p.changed)
	return p
}

// changed is the registry's watch: probe a cluster that gained a session
// now rather than at the next round.
func (p *Prober) changed(cluster string) {
	p.mu.Lock()
	p.soon[cluster] = true
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Health is what the last probe of cluster found (zero before the first).
func (p *Prober) Health(cluster string) Health {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.health[cluster]
}

// Run probes every held cluster once per Interval until ctx ends,
// spreading the probes over the interval.
func (p *Prober) Run(ctx context.Context) error {
	jobs := make(chan *Session)
	var wg sync.WaitGroup
	for range p.cfg.Workers {
		wg.Go(func() {
			for s := range jobs {
				p.probe(ctx, s)
			}
		})
	}
	defer wg.Wait()
	defer close(jobs)
	var feeders sync.WaitGroup
	defer feeders.Wait()
	feeders.Go(func() { p.kicks(ctx, jobs) })
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	for {
		held := p.newest()
		p.forgetExcept(held)
		// Spread the round over the interval rather than bursting it.
		gap := p.cfg.Interval / time.Duration(len(held)+1)
		for _, s := range held {
			select {
			case jobs <- s:
			case <-ctx.Done():
				return nil
			}
			if !sleep(ctx, gap) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// kicks feeds the workers the clusters that just gained a session.
func (p *Prober) kicks(ctx context.Context, jobs chan<- *Session) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.kick:
		}
		p.mu.Lock()
		soon := p.soon
		p.soon = map[string]bool{}
		p.mu.Unlock()
		for c := range soon {
			s, err := p.dialer.registry.Get(c)
			if err != nil {
				continue
			}
			select {
			case jobs <- s:
			case <-ctx.Done():
				return
			}
		}
	}
}

// newest is each held cluster's newest session.
func (p *Prober) newest() map[string]*Session {
	out := map[string]*Session{}
	for _, s := range p.dialer.registry.Sessions() {
		out[s.Cluster()] = s // Sessions sorts by age: the newest comes last
	}
	return out
}

func (p *Prober) forgetExcept(held map[string]*Session) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.health {
		if held[c] == nil {
			delete(p.health, c)
		}
	}
}

// probe measures one cluster through session s.
func (p *Prober) probe(ctx context.Context, s *Session) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	prev := p.Health(s.Cluster())
	h := Health{At: time.Now(), KubernetesVersion: prev.KubernetesVersion, versionAt: prev.versionAt}
	if rtt, err := s.Ping(); err == nil {
		h.RTT = rtt
		if p.cfg.Tracker != nil {
			p.cfg.Tracker.observeRTT(s.Cluster(), rtt)
		}
	}
	s.rtt.Store(int64(h.RTT))
	rt := p.dialer.HubHTTP(&Route{cluster: s.Cluster(), local: s})
	body, err := p.get(ctx, rt, "/readyz")
	switch {
	case err != nil:
		h.Message = fmt.Sprintf("/readyz through the tunnel: %v", err)
	default:
		h.Ready, h.Message = true, string(body)
	}
	if h.Ready && (h.KubernetesVersion == "" || time.Since(h.versionAt) > p.cfg.VersionEvery) {
		if v, err := p.version(ctx, rt); err == nil {
			h.KubernetesVersion, h.versionAt = v, time.Now()
		}
	}
	p.mu.Lock()
	p.health[s.Cluster()] = h
	p.mu.Unlock()
	if h.Ready != prev.Ready || h.Message != prev.Message || h.KubernetesVersion != prev.KubernetesVersion {
		p.cfg.OnChange(s.Cluster())
	}
}

func (p *Prober) get(ctx context.Context, rt http.RoundTripper, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://member"+path, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range p.cfg.Identity {
		req.Header[k] = v
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", resp.Status, body)
	}
	return body, nil
}

func (p *Prober) version(ctx context.Context, rt http.RoundTripper) (string, error) {
	body, err := p.get(ctx, rt, "/version")
	if err != nil {
		return "", err
	}
	var v struct {
		GitVersion string `json:"gitVersion"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return "", err
	}
	return v.GitVersion, nil
}

// sleep waits d or until ctx ends; it says whether ctx is still alive.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// RTTSample is one minute of a cluster's round trips through this
// replica: their mean, at the minute's end.
type RTTSample struct {
	At  time.Time     `json:"at"`
	RTT time.Duration `json:"rtt"`
}

// History is the cluster's round trips through this replica over the last
// hour, one sample a minute, oldest first (minutes without a probe are
// left out); nil without a Tracker.
func (p *Prober) History(cluster string) []RTTSample {
	if p.cfg.Tracker == nil {
		return nil
	}
	return p.cfg.Tracker.History(cluster)
}
