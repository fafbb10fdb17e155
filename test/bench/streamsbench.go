package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
)

// Targets of the streams figures.
const (
	// targetForwardShare is the least share of the direct port-forward
	// throughput the hub should carry.
	targetForwardShare = 0.50
	// targetLoadedRatio is how much the gateway's small GET may slow down
	// while log streams fill the same tunnel.
	targetLoadedRatio = 3.0
	// logStreams is how many `logs -f` of the firehose container run at
	// once for the loaded GET figure.
	logStreams = 4
	// execWarmup execs per side are not counted.
	execWarmup = 10
)

func streamFigures(o *options) []string {
	return []string{
		"exec `echo x` round trip p50 / p99",
		fmt.Sprintf("port-forward %d MiB, median of %d", o.forwardBytes>>20, o.downloads),
		fmt.Sprintf("gateway GET p50 / p99, idle → %d logs -f", logStreams),
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

	progress("streams: %d sequential gateway GETs idle and under %d logs -f", o.loadRequests, logStreams)
	hubc, err := newStreamClient(viaHub)
	if err != nil {
		t.add(row{Figure: figs[2], Err: err})
		return
	}
	gw := newClient(clientConfig{tls: tlsSettings{CAPEM: hub.CA.CertPEM}, keepAlive: true})
	defer gw.CloseIdleConnections()
	run := latencyRun{URL: hub.ClusterURL(memberName) + kubePath, Header: bearer(callerToken), N: o.loadRequests / kubeBlocks}
	idle, loaded, moved, err := getUnderLoad(ctx, gw, run, hubc.clients)
	if err != nil {
		t.add(row{Figure: figs[2], Err: err})
	} else {
		t.add(loadRatioRow(figs[2], idle, loaded, targetLoadedRatio))
	}

	t.note("streams: a test kubelet at %s in the member's namespace runs exec as host processes and port-forwards to a", streamsNodeIP)
	t.note("  source there; direct is the same client in the namespace against %s as admin. exec and port-forward", m.InternalURL)
	t.note("  use SPDY via client-go transport/spdy (kubectl's default is websockets); each exec is a new connection.")
	if err == nil {
		t.note("logs -f: the direct column is the same GET through the gateway with nothing else on the tunnel; the %d",
			logStreams)
		t.note("  firehose streams moved %s through the same tunnel meanwhile.", fmtRate(moved/1e6, "MB/s"))
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

// getUnderLoad runs the gateway GET in alternating idle and loaded blocks
// and returns both sides' latencies and the log bytes per second moved
// during the loaded blocks.
func getUnderLoad(ctx context.Context, gw *http.Client, run latencyRun, cs *kubernetes.Clientset) (idle, loaded []time.Duration, moved float64, _ error) {
	var rates []float64
	for b := range kubeBlocks {
		r := run
		if b == 0 {
			r.Warmup = 200
		}
		ds, err := sequential(ctx, gw, r)
		if err != nil {
			return nil, nil, 0, fmt.Errorf("idle: %w", err)
		}
		idle = append(idle, ds...)
		r.Warmup = 0
		ds, bps, err := withLogLoad(ctx, cs, func() ([]time.Duration, error) { return sequential(ctx, gw, r) })
		if err != nil {
			return nil, nil, 0, fmt.Errorf("under load: %w", err)
		}
		loaded = append(loaded, ds...)
		rates = append(rates, bps)
	}
	return idle, loaded, median(rates), nil
}

// withLogLoad runs f while logStreams `logs -f` of the firehose container
// read flat out through the hub, once they all flow, and returns f's
// latencies and the log bytes per second moved while f ran.
func withLogLoad(ctx context.Context, cs *kubernetes.Clientset, f func() ([]time.Duration, error)) ([]time.Duration, float64, error) {
	var wg sync.WaitGroup
	defer wg.Wait()
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	var moved atomic.Int64
	var flowing atomic.Int32
	ended := make(chan error, logStreams)
	for range logStreams {
		wg.Go(func() {
			rc, err := cs.CoreV1().Pods(streamsNS).GetLogs(streamsPod, &corev1.PodLogOptions{Container: "firehose", Follow: true}).Stream(lctx)
			if err != nil {
				ended <- fmt.Errorf("logs -f: %w", err)
				return
			}
			defer rc.Close()
			flowing.Add(1)
			_, err = io.CopyBuffer(countWriter{&moved}, rc, make([]byte, 64<<10))
			if err == nil {
				err = io.EOF
			}
			ended <- fmt.Errorf("logs -f ended: %w", err)
		})
	}
	// Wait until every stream is open and together they have moved a MiB
	// each, so the load is at full speed when f starts.
	deadline := time.After(20 * time.Second)
	for flowing.Load() < logStreams || moved.Load() < logStreams<<20 {
		select {
		case err := <-ended:
			return nil, 0, err
		case <-deadline:
			return nil, 0, fmt.Errorf("%d of %d log streams open, %d bytes moved after 20s", flowing.Load(), logStreams, moved.Load())
		case <-time.After(10 * time.Millisecond):
		}
	}
	before, start := moved.Load(), time.Now()
	ds, err := f()
	rate := float64(moved.Load()-before) / time.Since(start).Seconds()
	if err != nil {
		return nil, 0, err
	}
	select {
	case err := <-ended:
		return nil, 0, fmt.Errorf("a log stream ended during the run: %w", err)
	default:
	}
	return ds, rate, nil
}

type countWriter struct{ n *atomic.Int64 }

func (c countWriter) Write(p []byte) (int, error) {
	c.n.Add(int64(len(p)))
	return len(p), nil
}
