package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"time"

	"backhaul.io/backhaul/test/harness"
	"backhaul.io/backhaul/tunnel"
)

const (
	targetSessionKiB = 40
	// dialConcurrency is how many agents connect at once.
	dialConcurrency = 32
	// settle is how long RSS is left to settle before it is read.
	settle = 2 * time.Second
)

// memSample is the hub's and this process's memory at one moment.
type memSample struct {
	hubRSS     float64 // bytes, VmRSS of the hub process
	hubGo      float64 // goroutines in the hub
	hubHeap    float64 // bytes, hub heap in use
	selfGo     float64 // bytes, this process's live heap + stacks after a GC
	goroutines int     // in this process
}

// benchHubMemory measures the hub's resident memory per idle agent session:
// a real backhaul-hub process, n tunnels dialled from this process. The
// "direct" baseline is n idle HTTPS keep-alive connections to the same hub,
// opened first and kept open, so the session figure is on top of them.
func benchHubMemory(ctx context.Context, o *options, hubBin, dir string, t *table) {
	figHub := fmt.Sprintf("hub RSS per idle agent (N=%d)", o.agents)
	figSelf := "  agent side: Go heap+stacks per session"
	fail := func(err error) { t.add(row{Figure: figHub, Err: err}, row{Figure: figSelf, Err: err}) }
	if err := harness.RaiseNoFile(uint64(2*o.agents + 1024)); err != nil {
		fail(err)
		return
	}
	names := make([]string, o.agents)
	for i := range names {
		names[i] = fmt.Sprintf("c%04d", i)
	}
	progress("memory: starting backhaul-hub with %d clusters", o.agents)
	hub, err := harness.StartHub(ctx, harness.HubConfig{Binary: hubBin, Dir: filepath.Join(dir, "memhub"), Clusters: names, Args: profilingArgs(o)})
	if hub != nil {
		defer hub.Stop()
	}
	if err != nil {
		fail(err)
		return
	}
	var conns []net.Conn
	var sessions []*tunnel.Session
	defer func() {
		// After a failed dial some entries were never filled in.
		for _, c := range conns {
			if c != nil {
				_ = c.Close()
			}
		}
		for _, s := range sessions {
			if s != nil {
				_ = s.Close()
			}
		}
	}()

	sample := func() (memSample, error) {
		select {
		case <-time.After(settle):
		case <-ctx.Done():
			return memSample{}, ctx.Err()
		}
		return sampleMemory(ctx, hub)
	}
	before, err := sample()
	if err != nil {
		fail(err)
		return
	}
	progress("memory: %d idle HTTPS connections to the hub", o.agents)
	conns, err = openIdleHTTPS(ctx, hub, o.agents)
	if err != nil {
		fail(fmt.Errorf("baseline connections: %w", err))
		return
	}
	mid, err := sample()
	if err != nil {
		fail(err)
		return
	}
	progress("memory: %d agent sessions to the hub", o.agents)
	start := time.Now()
	sessions, err = dialSessions(ctx, hub, names)
	if err != nil {
		fail(err)
		return
	}
	dialTime := time.Since(start)
	err = harness.WaitFor(ctx, 30*time.Second, 100*time.Millisecond, func() error {
		m, err := scrapeMetrics(ctx, hub.AdminURL, "backhaul_hub_sessions")
		if err == nil && int(m["backhaul_hub_sessions"]) != o.agents {
			err = fmt.Errorf("hub reports %v sessions, want %d", m["backhaul_hub_sessions"], o.agents)
		}
		return err
	})
	if err != nil {
		fail(err)
		return
	}
	after, err := sample()
	if err != nil {
		fail(err)
		return
	}
	writeHeapProfile(o, "agent-sessions-heap")
	saveHubProfiles(ctx, o, hub, "idle-sessions-hub")

	n := float64(o.agents)
	direct, backhaul := (mid.hubRSS-before.hubRSS)/n, (after.hubRSS-mid.hubRSS)/n
	t.add(row{
		Figure:   figHub,
		Direct:   fmtKiB(direct),
		Backhaul: fmtKiB(backhaul),
		Ratio:    fmtRatio(backhaul / direct),
		Target:   fmt.Sprintf("≤%d KiB (%s)", targetSessionKiB, verdict(backhaul <= targetSessionKiB*1024)),
	}, row{
		Figure:   figSelf,
		Direct:   fmtKiB((mid.selfGo - before.selfGo) / n),
		Backhaul: fmtKiB((after.selfGo - mid.selfGo) / n),
		Ratio:    fmtRatio((after.selfGo - mid.selfGo) / (mid.selfGo - before.selfGo)),
		Target:   "-",
	})
	t.note("hub memory: RSS %.1f → %.1f (idle HTTPS) → %.1f MiB (agents); per session %.1f goroutines, %s heap in use (idle HTTPS: %.1f, %s);",
		before.hubRSS/(1<<20), mid.hubRSS/(1<<20), after.hubRSS/(1<<20),
		(after.hubGo-mid.hubGo)/n, fmtKiB((after.hubHeap-mid.hubHeap)/n),
		(mid.hubGo-before.hubGo)/n, fmtKiB((mid.hubHeap-before.hubHeap)/n))
	t.note("  agent side: %.1f goroutines per session; %d sessions dialled in %s with %d at a time.",
		float64(after.goroutines-mid.goroutines)/n, o.agents, dialTime.Round(10*time.Millisecond), dialConcurrency)
}

// sampleMemory reads the hub's VmRSS and Go figures and this process's own.
func sampleMemory(ctx context.Context, hub *harness.Hub) (memSample, error) {
	var s memSample
	rss, err := vmRSS(hub.Process().PID())
	if err != nil {
		return s, err
	}
	m, err := scrapeMetrics(ctx, hub.AdminURL, "go_goroutines", "go_memstats_heap_inuse_bytes")
	if err != nil {
		return s, err
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memSample{
		hubRSS: rss, hubGo: m["go_goroutines"], hubHeap: m["go_memstats_heap_inuse_bytes"],
		selfGo: float64(ms.HeapAlloc + ms.StackInuse), goroutines: runtime.NumGoroutine(),
	}, nil
}

// openIdleHTTPS opens n TLS connections to the hub, each with one finished
// keep-alive request, and leaves them idle.
func openIdleHTTPS(ctx context.Context, hub *harness.Hub, n int) ([]net.Conn, error) {
	conns := make([]net.Conn, n)
	d := tls.Dialer{Config: tlsSettings{CAPEM: hub.CA.CertPEM}.config()}
	err := parallel(ctx, n, func(ctx context.Context, i int) error {
		c, err := d.DialContext(ctx, "tcp", strings.TrimPrefix(hub.URL, "https://"))
		if err != nil {
			return err
		}
		conns[i] = c
		if _, err := c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: hub\r\n\r\n")); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReaderSize(c, 512), nil)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /healthz: %s", resp.Status)
		}
		return nil
	})
	return conns, err
}

// dialSessions opens one tunnel per cluster, as that cluster's agent, and
// serves each like an agent would (refusing streams; none are opened).
func dialSessions(ctx context.Context, hub *harness.Hub, clusters []string) ([]*tunnel.Session, error) {
	sessions := make([]*tunnel.Session, len(clusters))
	tlsCfg := tlsSettings{CAPEM: hub.CA.CertPEM}.config()
	err := parallel(ctx, len(clusters), func(ctx context.Context, i int) error {
		h := http.Header{}
		h.Set("Authorization", "Bearer "+hub.AgentTokens[clusters[i]])
		h.Set(tunnel.HeaderCluster, clusters[i])
		d := &tunnel.Dialer{
			URL: hub.URL, TLSConfig: tlsCfg, Header: h,
			Proxy: noProxy, Config: tunnel.DefaultConfig(),
		}
		s, err := d.Dial(ctx)
		if err != nil {
			return fmt.Errorf("cluster %s: %w", clusters[i], err)
		}
		sessions[i] = s
		go func() {
			_ = s.Serve(context.Background(), func(_ context.Context, in *tunnel.Incoming) {
				_ = in.Reject(tunnel.CodeNotAllowed, "bench agent")
			})
		}()
		return nil
	})
	// On error, the successful ones are closed by the caller.
	return sessions, err
}

// parallel runs f for 0..n-1, dialConcurrency at a time, and returns the
// first error.
func parallel(ctx context.Context, n int, f func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	next := make(chan int)
	go func() {
		defer close(next)
		for i := range n {
			select {
			case next <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	var mu sync.Mutex
	var first error
	var wg sync.WaitGroup
	for range dialConcurrency {
		wg.Go(func() {
			for i := range next {
				if err := f(ctx, i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					cancel()
				}
			}
		})
	}
	wg.Wait()
	if first == nil {
		// Only the caller's context can have ended the run early.
		first = ctx.Err()
	}
	return first
}

// scrapeMetrics reads unlabelled series from a Prometheus text endpoint.
func scrapeMetrics(ctx context.Context, adminURL string, names ...string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, adminURL+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		for _, n := range names {
			if name == n {
				if out[n], err = strconv.ParseFloat(val, 64); err != nil {
					return nil, fmt.Errorf("metric %s: %w", n, err)
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for _, n := range names {
		if _, ok := out[n]; !ok {
			return nil, fmt.Errorf("hub /metrics has no %s", n)
		}
	}
	return out, nil
}

// saveHubProfiles, with -profile, saves the hub's heap profile and its
// goroutines (debug=1: grouped by stack, with counts) as they are now.
func saveHubProfiles(ctx context.Context, o *options, hub *harness.Hub, name string) {
	if o.profileDir == "" {
		return
	}
	for _, p := range []struct{ query, file string }{
		{"heap", name + "-heap.pprof"},
		{"goroutine?debug=1", name + "-goroutines.txt"},
	} {
		path := filepath.Join(o.profileDir, p.file)
		if err := fetchProfile(ctx, hub.AdminURL+"/debug/pprof/"+p.query, path); err != nil {
			progress("no %s profile of the hub: %v", p.query, err)
			continue
		}
		addProfile(o, path)
	}
}

// writeHeapProfile writes this process's live heap to <-profile>/<name>.pprof
// when -profile is set; sampleMemory has just run a GC.
func writeHeapProfile(o *options, name string) {
	if o.profileDir == "" {
		return
	}
	path := filepath.Join(o.profileDir, name+".pprof")
	f, err := os.Create(path)
	if err == nil {
		err = errors.Join(pprof.Lookup("heap").WriteTo(f, 0), f.Close())
	}
	if err != nil {
		progress("no heap profile: %v", err)
		return
	}
	o.profiles = append(o.profiles, path)
}
