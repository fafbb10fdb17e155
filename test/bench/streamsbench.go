package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"
)

// Targets of the streams figures.
const (
	// targetForwardShare is the least share of the direct port-forward
	// throughput the hub should carry.
	targetForwardShare = 0.50
	// execWarmup execs per side are not counted.
	execWarmup = 10
)

func streamFigures(o *options) []string {
	return []string{
		"exec `echo x` round trip p50 / p99",
		fmt.Sprintf("port-forward %d MiB, median of %d", o.forwardBytes>>20, o.downloads),
		fmt.Sprintf("gateway GET p50 / p99, idle → %d logs -f", logStreams),
		"  same GET direct, idle → same load",
	}
}

func failStreams(t *table, o *options, err error) {
	for _, f := range streamFigures(o) {
		t.add(row{Figure: f, Err: err})
	}
}

// benchStreams measures exec and port-forward to a pod on a test kubelet in
// the member, through the hub and directly from inside the member's
// namespace, and the gateway's small GET while log streams saturate the
// same tunnel. It reuses the gateway figures' member, hub and agent.
func benchStreams(ctx context.Context, o *options, env *kubeEnv, dir string, t *table) {
	m, hub := env.member, env.hub
	figs := streamFigures(o)
	progress("streams: starting the test kubelet and a pod in %s", m.Netns.Name)
	se, err := startStreams(ctx, m, filepath.Join(dir, "streams"))
	defer se.stop()
	if err != nil {
		failStreams(t, o, err)
		return
	}
	if _, _, err := waitQuiet(ctx, quietBusy, o.settleLimit); err != nil {
		failStreams(t, o, err)
		return
	}
	viaHub := streamTarget{Host: hub.ClusterURL(memberName), Token: callerToken, CAPEM: hub.CA.CertPEM, Namespace: streamsNS, Pod: streamsPod}
	direct := viaHub
	direct.Host, direct.Token, direct.CAPEM = m.InternalURL, m.AdminToken, m.CAPEM
	sides := [2]func(streamRun) (streamResult, error){
		func(r streamRun) (streamResult, error) {
			r.Target = direct
			var res streamResult
			return res, inNetns(ctx, m, "-internal-streams", r, &res)
		},
		func(r streamRun) (streamResult, error) {
			r.Target = viaHub
			return runStreams(ctx, r)
		},
	}

	progress("streams: %d sequential execs direct (in the namespace) and via the hub", o.execs)
	t.add(compareExec(figs[0], o.execs, sides))
	progress("streams: %d MiB port-forwards direct and via the hub", o.forwardBytes>>20)
	t.add(compareForward(figs[1], o.forwardBytes, o.downloads, sides))

	progress("streams: %d sequential GETs via the gateway and direct, idle and under %d logs -f", o.loadRequests, logStreams)
	load, err := benchLogLoad(ctx, o, env, viaHub, figs[2], figs[3], t)

	t.note("streams: a test kubelet at %s in the member's namespace runs exec as host processes and port-forwards to a", streamsNodeIP)
	t.note("  source there; direct is the same client in the namespace against %s as admin. exec and port-forward", m.InternalURL)
	t.note("  use SPDY via client-go transport/spdy (kubectl's default is websockets); each exec is a new connection.")
	if err == nil {
		t.note("logs -f rows: the direct column is the GET with nothing else running, the backhaul column the same GET")
		t.note("  while %d firehose streams moved %s through the hub and agent (CPUs %.0f%% busy). The sub-row is the admin",
			logStreams, fmtRate(load.moved/1e6, "MB/s"), load.busy*100)
		t.note("  GET in the member's namespace under the same load: what the apiserver and the shared cores add.")
	}
}

// streamRun is one side's exec or port-forward run; JSON so a child in the
// member's namespace can take it on stdin.
type streamRun struct {
	Target       streamTarget `json:"target"`
	ExecWarmup   int          `json:"execWarmup,omitempty"`
	Execs        int          `json:"execs,omitempty"`
	ForwardBytes int64        `json:"forwardBytes,omitempty"`
}

type streamResult struct {
	LatenciesNs []int64 `json:"latenciesNs,omitempty"`
	BytesPerSec float64 `json:"bytesPerSec,omitempty"`
}

// runStreams runs r: in this process for the hub side, in a child inside
// the member's namespace for the direct side.
func runStreams(ctx context.Context, r streamRun) (streamResult, error) {
	var res streamResult
	c, err := newStreamClient(r.Target)
	if err != nil {
		return res, err
	}
	for i := range r.ExecWarmup {
		if err := c.execEcho(ctx); err != nil {
			return res, fmt.Errorf("warm-up exec %d: %w", i, err)
		}
	}
	ds := make([]time.Duration, 0, r.Execs)
	for i := range r.Execs {
		start := time.Now()
		if err := c.execEcho(ctx); err != nil {
			return res, fmt.Errorf("exec %d: %w", i, err)
		}
		ds = append(ds, time.Since(start))
	}
	res.LatenciesNs = toNanos(ds)
	if r.ForwardBytes > 0 {
		if res.BytesPerSec, err = c.forward(ctx, sourcePort, r.ForwardBytes); err != nil {
			return res, err
		}
	}
	return res, nil
}

// compareExec runs n sequential execs per side, in alternating blocks.
func compareExec(figure string, n int, sides [2]func(streamRun) (streamResult, error)) row {
	var lat [2][]time.Duration
	for b := range kubeBlocks {
		for i, run := range sides {
			r := streamRun{Execs: n / kubeBlocks}
			if b == 0 {
				r.ExecWarmup = execWarmup
			}
			res, err := run(r)
			if err != nil {
				return row{Figure: figure, Err: fmt.Errorf("%s: %w", side(i), err)}
			}
			lat[i] = append(lat[i], fromNanos(res.LatenciesNs)...)
		}
	}
	return latencyRow(figure, lat[0], lat[1], 0)
}

// compareForward alternates direct and hub port-forwards of size bytes and
// compares the median throughput of each.
func compareForward(figure string, size int64, runs int, sides [2]func(streamRun) (streamResult, error)) row {
	var rates [2][]float64
	for range runs {
		for i, run := range sides {
			res, err := run(streamRun{ForwardBytes: size})
			if err != nil {
				return row{Figure: figure, Err: fmt.Errorf("%s: %w", side(i), err)}
			}
			rates[i] = append(rates[i], res.BytesPerSec/1e6)
		}
	}
	return rateShareRow(figure, "MB/s", median(rates[0]), median(rates[1]), targetForwardShare)
}
