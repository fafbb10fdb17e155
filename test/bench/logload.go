package main

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
)

const (
	// targetLoadedRatio is how much the gateway's small GET may slow down
	// while log streams fill the same tunnel.
	targetLoadedRatio = 3.0
	// logStreams is how many `logs -f` of the firehose container run at
	// once for the loaded GET figure.
	logStreams = 4
)

// loadSide is one path of the GET-under-load figure, measured idle and
// under load in alternating blocks.
type loadSide struct {
	base         latencyRun
	run          func(latencyRun) ([]time.Duration, error)
	idle, loaded []time.Duration
}

// logLoad is what the log streams did while the loaded runs ran.
type logLoad struct {
	moved float64 // bytes per second, median over blocks
	busy  float64 // the machine's CPU busy share, median over blocks
}

// benchLogLoad compares the gateway's small GET idle and while logStreams
// `logs -f` stream flat out through the same hub and agent, and the same
// GET made directly in the member's namespace under the same load.
func benchLogLoad(ctx context.Context, o *options, env *kubeEnv, viaHub streamTarget, figGW, figDirect string, t *table) (logLoad, error) {
	m, hub := env.member, env.hub
	fail := func(err error) (logLoad, error) {
		t.add(row{Figure: figGW, Err: err}, row{Figure: figDirect, Err: err})
		return logLoad{}, err
	}
	logs, err := newStreamClient(viaHub)
	if err != nil {
		return fail(err)
	}
	gw := newClient(clientConfig{tls: tlsSettings{CAPEM: hub.CA.CertPEM}, keepAlive: true})
	defer gw.CloseIdleConnections()
	n := o.loadRequests / kubeBlocks
	gwSide := &loadSide{
		base: latencyRun{URL: hub.ClusterURL(memberName) + kubePath, Header: bearer(callerToken), N: n},
		run:  func(r latencyRun) ([]time.Duration, error) { return sequential(ctx, gw, r) },
	}
	// Each direct run is a new process with a new connection: a short
	// warm-up every time keeps its TLS handshake out of the figures.
	directSide := &loadSide{
		base: latencyRun{URL: m.InternalURL + kubePath, Header: bearer(m.AdminToken), Warmup: 20, N: n},
		run:  func(r latencyRun) ([]time.Duration, error) { return directInNetns(ctx, m, r) },
	}
	load, err := getUnderLoad(ctx, logs.clients, []*loadSide{gwSide, directSide})
	if err != nil {
		return fail(err)
	}
	t.add(loadRatioRow(figGW, gwSide.idle, gwSide.loaded, targetLoadedRatio),
		loadRatioRow(figDirect, directSide.idle, directSide.loaded, 0))
	return load, nil
}

// getUnderLoad runs every side idle, then every side under log load, in
// kubeBlocks alternating blocks.
func getUnderLoad(ctx context.Context, cs *kubernetes.Clientset, sides []*loadSide) (logLoad, error) {
	var moved, busy []float64
	for b := range kubeBlocks {
		for _, s := range sides {
			r := s.base
			if b == 0 {
				r.Warmup = max(r.Warmup, 200)
			}
			ds, err := s.run(r)
			if err != nil {
				return logLoad{}, fmt.Errorf("idle: %w", err)
			}
			s.idle = append(s.idle, ds...)
		}
		l, err := withLogLoad(ctx, cs, func() error {
			for _, s := range sides {
				ds, err := s.run(s.base)
				if err != nil {
					return fmt.Errorf("under load: %w", err)
				}
				s.loaded = append(s.loaded, ds...)
			}
			return nil
		})
		if err != nil {
			return logLoad{}, err
		}
		moved, busy = append(moved, l.moved), append(busy, l.busy)
	}
	return logLoad{moved: median(moved), busy: median(busy)}, nil
}

// withLogLoad runs f while logStreams `logs -f` of the firehose container
// read flat out through the hub, once they all flow, and reports what they
// moved and how busy the machine was while f ran.
func withLogLoad(ctx context.Context, cs *kubernetes.Clientset, f func() error) (logLoad, error) {
	var wg sync.WaitGroup
	defer wg.Wait()
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	var moved atomic.Int64
	var flowing atomic.Int32
	ended := make(chan error, logStreams)
	for range logStreams {
		wg.Go(func() {
			opts := &corev1.PodLogOptions{Container: "firehose", Follow: true}
			rc, err := cs.CoreV1().Pods(streamsNS).GetLogs(streamsPod, opts).Stream(lctx)
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
			return logLoad{}, err
		case <-deadline:
			return logLoad{}, fmt.Errorf("%d of %d log streams open, %d bytes moved after 20s", flowing.Load(), logStreams, moved.Load())
		case <-time.After(10 * time.Millisecond):
		}
	}
	b0, t0, _ := cpuTimes()
	before, start := moved.Load(), time.Now()
	if err := f(); err != nil {
		return logLoad{}, err
	}
	l := logLoad{moved: float64(moved.Load()-before) / time.Since(start).Seconds()}
	if b1, t1, err := cpuTimes(); err == nil && t1 > t0 {
		l.busy = (b1 - b0) / (t1 - t0)
	}
	select {
	case err := <-ended:
		return logLoad{}, fmt.Errorf("a log stream ended during the run: %w", err)
	default:
	}
	return l, nil
}

type countWriter struct{ n *atomic.Int64 }

func (c countWriter) Write(p []byte) (int, error) {
	c.n.Add(int64(len(p)))
	return len(p), nil
}
