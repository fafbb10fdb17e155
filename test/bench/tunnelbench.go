package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"backhaul.io/backhaul/tunnel"
)

// Targets of the tunnel figures.
const (
	targetReusedP50 = 50 * time.Microsecond
	targetNewP50    = 150 * time.Microsecond
	targetMBps      = 700
)

// latencyBlocks splits each sequential run into alternating direct and
// tunnelled blocks, so drift (CPU frequency, a neighbour's burst) lands on
// both sides alike.
const latencyBlocks = 10

// benchTunnel measures the in-process tunnel against direct loopback TCP to
// the same origin, with the same client code on both sides.
func benchTunnel(ctx context.Context, o *options, dir string, t *table) {
	figReused := "reused stream GET p50 / p99"
	figNew := "new stream per GET p50 / p99"
	figEarly := "new early stream per GET p50 / p99"
	figRPS := fmt.Sprintf("%d workers, %s: req/s", o.workers, o.duration)
	figDL := fmt.Sprintf("%d MiB download, median of %d", o.downloadBytes>>20, o.downloads)

	rig, err := startTunnelRig(ctx, dir, o.downloadBytes)
	if err != nil {
		for _, f := range []string{figReused, figNew, figEarly, figRPS, figDL} {
			t.add(row{Figure: f, Err: fmt.Errorf("start tunnel: %w", err)})
		}
		return
	}
	defer rig.close()

	// The only difference between the two sides: how a connection is made.
	dials := [2]dialFunc{
		func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", rig.origin)
		},
		func(ctx context.Context, _, _ string) (net.Conn, error) {
			return rig.hub.Open(ctx, tunnel.Request{Kind: tunnel.KindTCP, Address: rig.origin})
		},
	}
	// The gateway's streams: the GET follows the stream request instead
	// of waiting for the agent's reply (tunnel.Session.OpenEarly).
	early := [2]dialFunc{dials[0], func(ctx context.Context, _, _ string) (net.Conn, error) {
		return rig.hub.OpenEarly(ctx, tunnel.Request{Kind: tunnel.KindTCP, Address: rig.origin})
	}}
	small := "http://" + rig.origin + "/small"
	big := "http://" + rig.origin + "/big"

	var w syscalls
	progress("tunnel: %d sequential GETs on one connection, direct and tunnelled", o.requests)
	t.add(compareSequential(ctx, figReused, small, o.requests, true, dials, targetReusedP50, &w.reused))
	progress("tunnel: %d sequential GETs with a new connection each", o.requests)
	t.add(compareSequential(ctx, figNew, small, o.requests, false, dials, targetNewP50, &w.fresh))
	progress("tunnel: %d sequential GETs with a new early stream each", o.requests)
	t.add(compareSequential(ctx, figEarly, small, o.requests, false, early, targetNewP50, &w.early))

	progress("tunnel: %d concurrent workers for %s, direct then tunnelled", o.workers, o.duration)
	t.add(profiled(o, "tunnel-rps", func() row {
		return compareRPS(ctx, figRPS, small, o.workers, o.duration, dials)
	}))
	progress("tunnel: %d MiB downloads", o.downloadBytes>>20)
	t.add(profiled(o, "tunnel-download", func() row {
		return compareDownload(ctx, figDL, big, o.downloadBytes, o.downloads, dials, &w.download)
	}))
	// Syscalls are what a 2-core machine runs out of first; this shows
	// where the tunnel multiplies them (client, agent, hub and origin all
	// run in this process, so both directions are counted).
	t.note("write(2) calls in this process per request, direct / backhaul: reused %s, new stream %s, new early stream %s;",
		w.reused, w.fresh, w.early)
	t.note("  per MiB downloaded: %s", w.download)

	// Every client has closed its connections: the session should hold no
	// streams once the close handshakes are through.
	time.Sleep(200 * time.Millisecond)
	if n := rig.hub.NumStreams(); n > 0 {
		t.note("warning: the hub-side session still holds %d streams after every client closed", n)
	}
}

// compareSequential runs n sequential GETs direct and tunnelled (dials[0]
// and dials[1]), interleaved in blocks, and compares their latency.
func compareSequential(ctx context.Context, figure, url string, n int, keepAlive bool, dials [2]dialFunc, limit time.Duration, w *writeRatio) row {
	runs, err := interleaved(ctx, url, n, keepAlive, dials, w)
	if err != nil {
		return row{Figure: figure, Err: err}
	}
	return latencyRow(figure, runs[0], runs[1], limit)
}

// interleaved runs n sequential GETs through each of dials, in alternating
// blocks after a warm-up, and returns every request's latency per side.
func interleaved(ctx context.Context, url string, n int, keepAlive bool, dials [2]dialFunc, w *writeRatio) ([2][]time.Duration, error) {
	var runs [2][]time.Duration
	clients := []*http.Client{
		newClient(clientConfig{dial: dials[0], keepAlive: keepAlive}),
		newClient(clientConfig{dial: dials[1], keepAlive: keepAlive}),
	}
	for _, c := range clients {
		defer c.CloseIdleConnections()
	}
	for b := range latencyBlocks {
		for i, c := range clients {
			if b == 0 { // warm up outside the syscall count
				if _, err := sequential(ctx, c, latencyRun{URL: url, N: 200}); err != nil {
					return runs, fmt.Errorf("%s: warm-up: %w", side(i), err)
				}
			}
			before := writeSyscalls()
			ds, err := sequential(ctx, c, latencyRun{URL: url, N: n / latencyBlocks})
			if err != nil {
				return runs, fmt.Errorf("%s: %w", side(i), err)
			}
			w.add(i, writeSyscalls()-before, float64(len(ds)))
			runs[i] = append(runs[i], ds...)
		}
	}
	return runs, nil
}

func compareRPS(ctx context.Context, figure, url string, workers int, d time.Duration, dials [2]dialFunc) row {
	var rps [2]float64
	for i, dial := range dials {
		c := newClient(clientConfig{dial: dial, keepAlive: true, maxConns: workers})
		var err error
		rps[i], err = concurrent(ctx, c, url, workers, d)
		c.CloseIdleConnections()
		if err != nil {
			return row{Figure: figure, Err: fmt.Errorf("%s: %w", side(i), err)}
		}
	}
	return rateRow(figure, "req/s", rps[0], rps[1], 0)
}

// compareDownload alternates direct and tunnelled downloads and compares
// the median throughput of each.
func compareDownload(ctx context.Context, figure, url string, size int64, runs int, dials [2]dialFunc, w *writeRatio) row {
	mbps, err := downloads(ctx, url, size, runs, dials, w)
	if err != nil {
		return row{Figure: figure, Err: err}
	}
	return rateRow(figure, "MB/s", mbps[0], mbps[1], targetMBps)
}

// downloads fetches url runs times through each of dials, alternating, each
// on a new connection, and returns the median MB/s per side.
func downloads(ctx context.Context, url string, size int64, runs int, dials [2]dialFunc, w *writeRatio) ([2]float64, error) {
	var rates [2][]float64
	for range runs {
		for i, dial := range dials {
			c := newClient(clientConfig{dial: dial, keepAlive: false})
			before := writeSyscalls()
			bps, err := download(ctx, c, url, size)
			c.CloseIdleConnections()
			if err != nil {
				return [2]float64{}, fmt.Errorf("%s: %w", side(i), err)
			}
			w.add(i, writeSyscalls()-before, float64(size)/(1<<20))
			rates[i] = append(rates[i], bps/1e6)
		}
	}
	return [2]float64{median(rates[0]), median(rates[1])}, nil
}

// writeRatio accumulates write(2) calls per unit of work, direct ([0]) and
// tunnelled ([1]).
type writeRatio struct{ calls, units [2]float64 }

func (w *writeRatio) add(i int, calls, units float64) {
	w.calls[i] += calls
	w.units[i] += units
}

func (w writeRatio) String() string {
	if w.units[0] == 0 || w.units[1] == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f / %.1f", w.calls[0]/w.units[0], w.calls[1]/w.units[1])
}

type syscalls struct{ reused, fresh, early, download writeRatio }

// writeSyscalls is this process's write(2) count so far (0 if /proc is not
// readable, which turns the note into noise rather than an error).
func writeSyscalls() float64 {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "syscw: "); ok {
			n, _ := strconv.ParseFloat(v, 64)
			return n
		}
	}
	return 0
}

func side(i int) string {
	if i == 0 {
		return "direct"
	}
	return "backhaul"
}

// profiled runs f under the CPU profiler when -profile names a directory, writing <dir>/<name>.pprof. The profile covers direct and
// tunnelled halves alike; the tunnel's share stands out by package (yamux,
// websocket, crypto/tls).
func profiled(o *options, name string, f func() row) row {
	if o.profileDir == "" {
		return f()
	}
	path := filepath.Join(o.profileDir, name+".pprof")
	fh, err := os.Create(path)
	if err != nil {
		progress("no CPU profile: %v", err)
		return f()
	}
	defer fh.Close()
	if err := pprof.StartCPUProfile(fh); err != nil {
		progress("no CPU profile: %v", err)
		return f()
	}
	r := f()
	pprof.StopCPUProfile()
	o.profiles = append(o.profiles, path)
	return r
}
