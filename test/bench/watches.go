package main

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// watchSide is what one side of the gateway holds at a moment.
type watchSide struct {
	goroutines float64
	rss        float64 // bytes
}

// watchFigures are the deltas N watches cost.
type watchFigures struct {
	n                       int
	callerConns             int64 // TCP connections the caller dialled to the hub
	agentConns              int   // agent → API server connections, while the watches run
	hubGo, agentGo          float64
	hubRSS, agentRSS        float64
	delivered, wantDelivery int64
}

// benchWatches opens N client-go watches through the gateway from this one
// process, as N informers would, over HTTP/2 (what client-go negotiates)
// and, for comparison, forced to HTTP/1.1; and reports TCP connections,
// goroutines and resident memory each costs the hub and the agent. One
// ConfigMap event must reach every watch, so they are live.
func benchWatches(ctx context.Context, o *options, env *kubeEnv, t *table) {
	for _, proto := range []string{"h2", "http/1.1"} {
		fig := fmt.Sprintf("%d client-go watches, caller over %s", o.watches, proto)
		progress("watches: %s", fig)
		f, err := measureWatches(ctx, o, env, proto)
		if err != nil {
			t.add(row{Figure: fig, Err: err})
			continue
		}
		n := float64(f.n)
		t.add(row{
			Figure:   fig,
			Direct:   "-",
			Backhaul: fmt.Sprintf("caller→hub %d conns, agent→API %d conns", f.callerConns, f.agentConns),
			Ratio:    "-",
			Target:   "≤2 conns each side (" + verdict(f.callerConns <= 2 && f.agentConns <= 2) + ")",
		})
		t.add(row{
			Figure:   "  per watch: hub goroutines / KiB, agent goroutines / KiB",
			Direct:   "-",
			Backhaul: fmt.Sprintf("%.1f / %s, %.1f / %s", f.hubGo/n, fmtKiB(f.hubRSS/n), f.agentGo/n, fmtKiB(f.agentRSS/n)),
			Ratio:    "-",
			Target:   "≤1 goroutine, hub ≤10 KiB (" + verdict(f.hubGo/n <= 1 && f.agentGo/n <= 1 && f.hubRSS/n <= 10<<10) + ")",
		})
		t.note("watches over %s: %d of %d watches saw the test event; agent→API connections are bounded by the member's", proto, f.delivered, f.wantDelivery)
		t.note("  --http2-max-streams-per-connection (kube-apiserver's default 100: a direct client-go process needs as many).")
	}
}

// watchesNamespace holds the ConfigMaps the bench's watches watch.
const watchesNamespace = "bench-watches"

func measureWatches(ctx context.Context, o *options, env *kubeEnv, proto string) (watchFigures, error) {
	f := watchFigures{n: o.watches}
	var dials atomic.Int64
	cfg := &rest.Config{
		Host:            env.hub.ClusterURL(memberName),
		BearerToken:     callerToken,
		TLSClientConfig: rest.TLSClientConfig{CAData: env.hub.CA.CertPEM, NextProtos: []string{proto}},
		QPS:             -1,
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return f, err
	}
	if _, stderr, err := env.member.Kubectl(ctx, "create", "namespace", watchesNamespace); err != nil && !strings.Contains(stderr, "AlreadyExists") {
		return f, fmt.Errorf("create namespace: %w: %s", err, stderr)
	}
	// Settle, then the baseline.
	time.Sleep(time.Second)
	before, _, err := sampleWatchSides(ctx, env)
	if err != nil {
		return f, err
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ws := make([]watch.Interface, 0, o.watches)
	defer func() {
		for _, w := range ws {
			w.Stop()
		}
	}()
	var delivered atomic.Int64
	name := "over-" + strings.ReplaceAll(proto, "/", "")
	for i := range o.watches {
		w, err := cs.CoreV1().ConfigMaps(watchesNamespace).Watch(wctx, metav1.ListOptions{})
		if err != nil {
			return f, fmt.Errorf("watch %d: %w", i, err)
		}
		ws = append(ws, w)
		go func() {
			for ev := range w.ResultChan() {
				if cm, ok := ev.Object.(*corev1.ConfigMap); ok && ev.Type == watch.Added && cm.Name == name {
					delivered.Add(1)
				}
			}
		}()
	}
	time.Sleep(2 * time.Second)
	during, agentConns, err := sampleWatchSides(ctx, env)
	if err != nil {
		return f, err
	}
	if _, stderr, err := env.member.Kubectl(ctx, "-n", watchesNamespace, "create", "configmap", name); err != nil {
		return f, fmt.Errorf("create configmap: %w: %s", err, stderr)
	}
	deadline := time.Now().Add(30 * time.Second)
	for delivered.Load() < int64(o.watches) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	f.callerConns = dials.Load()
	f.agentConns = agentConns
	f.hubGo, f.agentGo = during["hub"].goroutines-before["hub"].goroutines, during["agent"].goroutines-before["agent"].goroutines
	f.hubRSS, f.agentRSS = during["hub"].rss-before["hub"].rss, during["agent"].rss-before["agent"].rss
	f.delivered, f.wantDelivery = delivered.Load(), int64(o.watches)
	return f, nil
}

// sampleWatchSides reads the hub's and the agent's goroutines and RSS, and
// counts the agent's established connections to its API server.
func sampleWatchSides(ctx context.Context, env *kubeEnv) (map[string]watchSide, int, error) {
	out := map[string]watchSide{}
	hm, err := scrapeMetrics(ctx, env.hub.AdminURL, "go_goroutines")
	if err != nil {
		return nil, 0, err
	}
	hrss, err := vmRSS(env.hub.Process().PID())
	if err != nil {
		return nil, 0, err
	}
	out["hub"] = watchSide{goroutines: hm["go_goroutines"], rss: hrss}
	metrics, err := env.member.Netns.Command(ctx, "curl", "-sSf", fmt.Sprintf("http://127.0.0.1:%d/metrics", agentAdminPort)).Output()
	if err != nil {
		return nil, 0, fmt.Errorf("agent /metrics: %w", err)
	}
	var ago float64
	for line := range strings.SplitSeq(string(metrics), "\n") {
		if v, ok := strings.CutPrefix(line, "go_goroutines "); ok {
			_, _ = fmt.Sscan(v, &ago)
		}
	}
	arss, err := vmRSS(env.agent.PID())
	if err != nil {
		return nil, 0, err
	}
	out["agent"] = watchSide{goroutines: ago, rss: arss}
	ss, err := env.member.Netns.Command(ctx, "ss", "-Htnp", "state", "established").Output()
	if err != nil {
		return nil, 0, fmt.Errorf("ss: %w", err)
	}
	api, err := url.Parse(env.member.InternalURL)
	if err != nil {
		return nil, 0, err
	}
	apiPort := ":" + api.Port()
	conns := 0
	for line := range strings.SplitSeq(string(ss), "\n") {
		fields := strings.Fields(line)
		if len(fields) >= 4 && strings.HasSuffix(fields[3], apiPort) && strings.Contains(line, "backhaul-agent") {
			conns++
		}
	}
	return out, conns, nil
}
