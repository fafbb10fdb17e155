package nodes

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"backhaul.io/backhaul/agent"
)

// What m1's agents say of their own tunnels, sampled through the
// member's API server while the operations tests run.

// opsAgentSampler reads, every second, the /metrics of each of m1's agent
// Pods that were there when it started (through m1's API server's Pod
// proxy, not the hub): whether the agent has a tunnel session at all,
// and how many upgrades the hub refused it with 503.
type opsAgentSampler struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	series map[string]*opsAgentSeries
}

type opsAgentSeries struct {
	samples, failed, zero int
	firstErr              string
	// zeroFrom is the first sample of the current run without a session;
	// runs are the runs seen, from their first sample to the next sample
	// with a session (or the end).
	zeroFrom time.Time
	runs     []opsSpan
	// refused503 is backhaul_agent_hub_refusals_total{reason="unavailable"}
	// at the first and the last sample.
	refused503First, refused503Last float64
}

type opsSpan struct{ from, to time.Time }

func (s opsSpan) String() string {
	return fmt.Sprintf("%s–%s (%v)", s.from.Format("15:04:05.000"), s.to.Format("15:04:05.000"), s.to.Sub(s.from).Round(time.Millisecond))
}

func (e *environment) opsSampleAgents(ctx context.Context, t *testing.T) *opsAgentSampler {
	t.Helper()
	pods, err := e.opsAgentPods(ctx)
	require.NoError(t, err)
	s := &opsAgentSampler{series: map[string]*opsAgentSeries{}}
	for _, p := range pods {
		s.series[p.Name] = &opsAgentSeries{}
	}
	ctx, s.cancel = context.WithCancel(context.Background())
	for name, ser := range s.series {
		s.wg.Go(func() {
			for ctx.Err() == nil {
				a, err := e.opsAgentMetrics(ctx, name)
				now := time.Now()
				s.mu.Lock()
				switch {
				case ctx.Err() != nil:
				case err != nil:
					ser.failed++
					if ser.firstErr == "" {
						ser.firstErr = err.Error()
					}
				default:
					if ser.samples == 0 {
						ser.refused503First = a.refused503
					}
					ser.samples++
					ser.refused503Last = a.refused503
					if !a.connected {
						ser.zero++
						if ser.zeroFrom.IsZero() {
							ser.zeroFrom = now
						}
					} else if !ser.zeroFrom.IsZero() {
						ser.runs = append(ser.runs, opsSpan{ser.zeroFrom, now})
						ser.zeroFrom = time.Time{}
					}
				}
				s.mu.Unlock()
				opsSleep(ctx, time.Second)
			}
		})
	}
	t.Cleanup(s.stop)
	return s
}

func (s *opsAgentSampler) stop() {
	s.cancel()
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ser := range s.series {
		if !ser.zeroFrom.IsZero() {
			ser.runs = append(ser.runs, opsSpan{ser.zeroFrom, time.Now()})
			ser.zeroFrom = time.Time{}
		}
	}
}

// report stops the sampler, logs each agent's figures, and returns, by
// agent, the spans it had no tunnel session at all.
func (s *opsAgentSampler) report(t *testing.T, test string) map[string][]opsSpan {
	t.Helper()
	s.stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	alone := map[string][]opsSpan{}
	for _, name := range slices.Sorted(maps.Keys(s.series)) {
		ser := s.series[name]
		var longest time.Duration
		for _, r := range ser.runs {
			longest = max(longest, r.to.Sub(r.from))
		}
		opsFigure(t, test, "agent", name, "samples", ser.samples, "samples_failed", ser.failed,
			"samples_without_session", ser.zero, "longest_without_session_ms", longest.Milliseconds(),
			"upgrades_refused_503", ser.refused503Last-ser.refused503First)
		if ser.firstErr != "" {
			t.Logf("agent %s: first failed sample: %s", name, ser.firstErr)
		}
		if len(ser.runs) > 0 {
			alone[name] = ser.runs
			t.Logf("agent %s had no tunnel session: %v", name, ser.runs)
		}
	}
	return alone
}

// opsAgentTunnel is what an agent's /metrics says of its tunnel.
type opsAgentTunnel struct {
	connected  bool    // backhaul_agent_connected
	sessions   float64 // backhaul_agent_sessions, draining ones included
	refused503 float64 // backhaul_agent_hub_refusals_total{reason="unavailable"}
}

// opsAgentMetrics reads an agent's /metrics from its admin port, through
// m1's API server.
func (e *environment) opsAgentMetrics(ctx context.Context, pod string) (opsAgentTunnel, error) {
	var a opsAgentTunnel
	out, _, err := e.m1.Kubectl(ctx, "get", "--raw", "/api/v1/namespaces/"+ns+"/pods/"+pod+":9090/proxy/metrics")
	if err != nil {
		return a, err
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(out))
	if err != nil {
		return a, err
	}
	gauge := func(name string) (float64, error) {
		f, ok := families[name]
		if !ok || len(f.GetMetric()) != 1 {
			return 0, fmt.Errorf("agent %s: no %s", pod, name)
		}
		return f.GetMetric()[0].GetGauge().GetValue(), nil
	}
	c, err := gauge("backhaul_agent_connected")
	if err != nil {
		return a, err
	}
	a.connected = c == 1
	if a.sessions, err = gauge("backhaul_agent_sessions"); err != nil {
		return a, err
	}
	for _, m := range families["backhaul_agent_hub_refusals_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "reason" && l.GetValue() == agent.HubRefusalUnavailable {
				a.refused503 = m.GetCounter().GetValue()
			}
		}
	}
	return a, nil
}

// opsAgentsHoldSessions: every agent Pod says it holds
// opsHubConnections sessions.
func (e *environment) opsAgentsHoldSessions(ctx context.Context) error {
	pods, err := e.opsAgentPods(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range pods {
		a, err := e.opsAgentMetrics(ctx, p.Name)
		switch {
		case err != nil:
			errs = append(errs, err)
		case a.sessions != opsHubConnections:
			errs = append(errs, fmt.Errorf("agent %s holds %v sessions", p.Name, a.sessions))
		}
	}
	return errors.Join(errs...)
}

// --- Milestones.
