package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

// healthWatch probes each replica's /healthz once a second with the
// kubelet's default timeout (1 s) and a new connection each time, as the
// Deployment's liveness probe does (it probes every 10 s and restarts the
// container after 3 failures in a row), and keeps the longest stretch of
// failed probes.
type healthWatch struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	names   []string
	longest map[string]time.Duration
	failed  map[string]int
	probes  map[string]int
}

// livenessTimeout is the kubelet's default probe timeout (timeoutSeconds).
const livenessTimeout = time.Second

func watchHealth(ctx context.Context, rs []*haReplica) *healthWatch {
	ctx, cancel := context.WithCancel(ctx)
	w := &healthWatch{cancel: cancel, longest: map[string]time.Duration{}, failed: map[string]int{}, probes: map[string]int{}}
	c := &http.Client{Timeout: livenessTimeout, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	for _, r := range rs {
		w.names = append(w.names, r.name)
		w.wg.Go(func() { w.probe(ctx, c, r) })
	}
	return w
}

func (w *healthWatch) probe(ctx context.Context, c *http.Client, r *haReplica) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var down time.Time // start of the current stretch of failures
	record := func(now time.Time) {
		if !down.IsZero() {
			w.mu.Lock()
			w.longest[r.name] = max(w.longest[r.name], now.Sub(down))
			w.mu.Unlock()
		}
	}
	for {
		select {
		case <-ctx.Done():
			record(time.Now())
			return
		case <-tick.C:
		}
		start := time.Now()
		ok := false
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.adminURL+"/healthz", nil)
		if err == nil {
			if resp, err := c.Do(req); err == nil {
				ok = resp.StatusCode == http.StatusOK
				_ = resp.Body.Close()
			}
		}
		if ctx.Err() != nil {
			record(time.Now())
			return
		}
		w.mu.Lock()
		w.probes[r.name]++
		if !ok {
			w.failed[r.name]++
		}
		w.mu.Unlock()
		switch {
		case !ok && down.IsZero():
			down = start
		case ok:
			record(start)
			down = time.Time{}
		}
	}
}

// stop ends the probes and says what they saw.
func (w *healthWatch) stop() string {
	w.cancel()
	w.wg.Wait()
	var parts []string
	for _, n := range w.names {
		parts = append(parts, fmt.Sprintf("%s %d of %d failed, longest stretch %.0f s", n, w.failed[n], w.probes[n], w.longest[n].Seconds()))
	}
	return strings.Join(parts, "; ")
}

// directoryCost is what the host's apiserver counted for the HubReplica
// objects (the session directory) between two moments.
type directoryCost struct {
	patches, failed, events, eventBytes float64
}

func hostDirectoryCost(ctx context.Context, h *haHost) (directoryCost, error) {
	out, err := h.kubectl(ctx, "", "get", "--raw", "/metrics")
	if err != nil {
		return directoryCost{}, fmt.Errorf("host /metrics: %w", err)
	}
	m, err := parseSeries(strings.NewReader(out))
	if err != nil {
		return directoryCost{}, err
	}
	hr := `resource="hubreplicas"`
	return directoryCost{
		patches:    m.sum("apiserver_request_total", hr, `verb="PATCH"`),
		failed:     m.sum("apiserver_request_total", hr, `verb="PATCH"`) - m.sum("apiserver_request_total", hr, `verb="PATCH"`, `code="200"`),
		events:     m.sum("apiserver_watch_events_total", hr),
		eventBytes: m.sum("apiserver_watch_events_sizes_sum", hr),
	}, nil
}

func (c directoryCost) sub(d directoryCost) directoryCost {
	return directoryCost{c.patches - d.patches, c.failed - d.failed, c.events - d.events, c.eventBytes - d.eventBytes}
}

func (c directoryCost) String() string {
	return fmt.Sprintf("%.0f HubReplica status patches (%.0f refused), %.0f watch events of %.1f MiB sent",
		c.patches, c.failed, c.events, c.eventBytes/(1<<20))
}

// hubReplicaSizes is the size of each replica's directory entry as the
// apiserver stores and sends it (compact JSON), and per cluster it lists.
func hubReplicaSizes(ctx context.Context, host *haHost, rs []*haReplica) string {
	var parts []string
	for _, r := range rs {
		path := fmt.Sprintf("/apis/backhaul.io/v1alpha1/namespaces/%s/hubreplicas/%s", haNamespace, r.name)
		out, err := host.kubectl(ctx, "", "get", "--raw", path)
		if err != nil {
			parts = append(parts, fmt.Sprintf("%s: %v", r.name, strings.TrimSpace(out)))
			continue
		}
		n := strings.Count(out, `"name":`) - 1 // the object's own
		per := ""
		if n > 0 {
			per = fmt.Sprintf(", %d B per cluster", len(out)/n)
		}
		parts = append(parts, fmt.Sprintf("%s %s for %d clusters%s", r.name, fmtKiB(float64(len(out))), n, per))
	}
	return strings.Join(parts, "; ")
}
