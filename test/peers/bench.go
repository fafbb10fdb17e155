package main

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"time"

	"backhaul.io/backhaul/test/harness"
)

// latencyBlocks is how many blocks the sequential runs are cut into; the
// blocks of every row alternate, so a burst of load from elsewhere on the
// machine falls on all rows alike.
const latencyBlocks = 10

// loadRow is one target's latency and throughput figures.
type loadRow struct {
	*target
	keepAlive, newConn []time.Duration
	rps, mbps          []float64
	// CPU time of the server and the agent over the concurrent runs, and
	// the requests those runs completed.
	cpuServer, cpuAgent time.Duration
	requests            int64
	err                 error
}

// result is everything the run measured, for the report.
type result struct {
	versions []string
	rows     []*loadRow
	mem      map[string]*memResult
	agents   []int
	notes    []string
}

func (r *result) note(format string, args ...any) {
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}

// bench runs every part the options ask for.
func bench(ctx context.Context, o *options, dir string) (*result, error) {
	res := &result{mem: map[string]*memResult{}, agents: o.agents}
	res.versions = versions(ctx, o)
	var knp *knpBinaries
	if o.has(sysKonnectivity) {
		progress("building konnectivity's proxy-server and proxy-agent (%s)", depVersion(knpModule))
		knp = buildKonnectivity(ctx, o.bin)
	}
	if !o.skipLoad {
		rows, err := benchLoad(ctx, o, dir, knp)
		if err != nil {
			return nil, err
		}
		res.rows = rows
	}
	if !o.skipMemory && ctx.Err() == nil {
		benchMemory(ctx, o, dir, knp, res)
	}
	res.describe(o)
	return res, nil
}

// describe notes how each system was run.
func (res *result) describe(o *options) {
	if !o.skipLoad {
		res.note("Every row runs the same HTTP/1.1 client against the same origin (a process of its own); a tunnelled row first")
		res.note("  CONNECTs to the system's front end. Agent to server is TLS everywhere. p50 of %d kept-alive and %d new-connection", o.requests, o.connections)
		res.note("  GETs of %d B (rows alternating in %d blocks); req/s: mean of 2 runs; MB/s: median of %d download(s) of %d MiB.",
			smallBody, latencyBlocks, o.downloads, o.bulk>>20)
	}
	if o.has(sysRemotedialer) {
		res.note("remotedialer: its server (remotedialer.New on wss) and its client (ConnectToProxy) each in a process of its own;")
		res.note("  it has no front end of its own, so the server process adds a CONNECT listener that dials through its Dialer.")
	}
	if o.has(sysKonnectivity) {
		res.note("konnectivity: proxy-server --mode=http-connect and proxy-agent over mTLS, one pair with the frontend on a Unix socket,")
		res.note("  one on TCP (served only with mTLS: a TLS handshake per new connection); --v=%d (their mains default to 4, a line per packet).", knpVerbosity)
	}
	if o.has(sysBackhaul) {
		res.note("backhaul: backhaul-hub (--connect-listen with Proxy-Authorization, --connect-uds) and backhaul-agent, whose API server is the origin.")
	}
	if !o.skipMemory {
		res.note("Memory: a fresh server per system, N idle sessions opened from this process with the system's own client library")
		res.note("  (remotedialer.ConnectToProxy, konnectivity pkg/agent ClientSet, Backhaul tunnel.Dialer); KiB/session is")
		res.note("  (server RSS with N - with none) / N, read %s after the last session is up; goroutines likewise.", settle)
	}
}

// benchLoad starts every system at once and measures each row, the rows'
// runs alternating.
func benchLoad(ctx context.Context, o *options, dir string, knp *knpBinaries) ([]*loadRow, error) {
	topo, err := startTopology(ctx, o, dir, knp)
	if err != nil {
		return nil, err
	}
	defer topo.close()
	rows := make([]*loadRow, len(topo.targets))
	for i, t := range topo.targets {
		rows[i] = &loadRow{target: t, err: t.err}
	}
	live := func() []*loadRow {
		var out []*loadRow
		for _, r := range rows {
			if r.err == nil {
				out = append(out, r)
			}
		}
		return out
	}
	small := "http://" + topo.origin + "/small"
	bulk := fmt.Sprintf("http://%s/bulk?size=%d", topo.origin, o.bulk)

	warm := 200
	if o.quick {
		warm = 50
	}
	progress("load: %d sequential GETs on one kept-alive connection per row", o.requests)
	sequentialRuns(ctx, live(), small, o.requests, warm, true, func(r *loadRow, ds []time.Duration) { r.keepAlive = append(r.keepAlive, ds...) })
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	progress("load: %d sequential GETs on a new connection each per row", o.connections)
	sequentialRuns(ctx, live(), small, o.connections, 20, false, func(r *loadRow, ds []time.Duration) { r.newConn = append(r.newConn, ds...) })
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	const rounds = 2
	progress("load: %d concurrent kept-alive connections, %s per row", o.workers, o.duration)
	for range rounds {
		for _, r := range live() {
			c := newClient(r.dial, true, o.workers)
			s0, a0 := procCPU(r.server), procCPU(r.agent)
			n, took, err := concurrent(ctx, c, small, o.workers, o.duration/rounds)
			s1, a1 := procCPU(r.server), procCPU(r.agent)
			c.CloseIdleConnections()
			if err != nil {
				r.err = fmt.Errorf("%d-way: %w", o.workers, err)
				continue
			}
			r.rps = append(r.rps, float64(n)/took.Seconds())
			// The warm-up's requests are in the CPU time too: a few
			// hundred against tens of thousands.
			r.cpuServer, r.cpuAgent, r.requests = r.cpuServer+s1-s0, r.cpuAgent+a1-a0, r.requests+n
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	progress("load: %d download(s) of %d MiB per row", o.downloads, o.bulk>>20)
	for range o.downloads {
		for _, r := range live() {
			bps, err := download(ctx, r.dial, bulk, o.bulk)
			if err != nil {
				r.err = fmt.Errorf("bulk: %w", err)
				continue
			}
			r.mbps = append(r.mbps, bps/1e6)
		}
	}
	return rows, ctx.Err()
}

// sequentialRuns runs n sequential GETs per row in latencyBlocks blocks,
// the rows alternating block by block, each row on its own client (one
// kept-alive connection, or a new connection per GET).
func sequentialRuns(ctx context.Context, rows []*loadRow, url string, n, warm int, keepAlive bool, add func(*loadRow, []time.Duration)) {
	clients := make(map[*loadRow]*http.Client, len(rows))
	defer func() {
		for _, c := range clients {
			c.CloseIdleConnections()
		}
	}()
	for b := range latencyBlocks {
		for _, r := range rows {
			if r.err != nil {
				continue
			}
			c := clients[r]
			if c == nil {
				c = newClient(r.dial, keepAlive, 1)
				clients[r] = c
			}
			if b == 0 {
				if _, err := sequential(ctx, c, url, warm); err != nil {
					r.err = fmt.Errorf("warm-up: %w", err)
					continue
				}
			}
			ds, err := sequential(ctx, c, url, n/latencyBlocks)
			if err != nil {
				r.err = err
				continue
			}
			add(r, ds)
		}
	}
}

// benchMemory measures each system's server with idle sessions, one
// system at a time, each on a fresh server.
func benchMemory(ctx context.Context, o *options, dir string, knp *knpBinaries, res *result) {
	maxN := o.agents[len(o.agents)-1]
	if err := harness.RaiseNoFile(uint64(maxN) + 2048); err != nil {
		for _, s := range o.systems[1:] {
			res.mem[s] = &memResult{err: err}
		}
		return
	}
	for _, sys := range o.systems {
		if sys == sysDirect || ctx.Err() != nil {
			continue
		}
		var stops stopList
		d := filepath.Join(dir, "memory-"+sys)
		progress("memory: starting a fresh %s server", sys)
		var rig memRig
		var err error
		switch sys {
		case sysRemotedialer:
			rig, err = newRDMemRig(ctx, &stops, d)
		case sysKonnectivity:
			rig, err = newKNPMemRig(ctx, &stops, d, knp)
		case sysBackhaul:
			rig, err = newBHMemRig(ctx, &stops, d, o.bin, maxN)
		}
		if err != nil {
			res.mem[sys] = &memResult{err: err}
		} else {
			res.mem[sys] = measureMemory(ctx, o, sys, rig)
		}
		stops.close()
	}
}

// Module paths of the peers, for their versions.
const (
	rdModule  = "github.com/rancher/remotedialer"
	knpModule = "sigs.k8s.io/apiserver-network-proxy"
)

// depVersion is the version of a module this binary was built with.
func depVersion(path string) string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	for _, d := range bi.Deps {
		if d.Path == path {
			if d.Replace != nil {
				return d.Version + " => " + d.Replace.Path + " " + d.Replace.Version
			}
			return d.Version
		}
	}
	return "unknown"
}

// versions are the versions of everything measured.
func versions(ctx context.Context, o *options) []string {
	var out []string
	if o.has(sysRemotedialer) {
		out = append(out, rdModule+" "+depVersion(rdModule))
	}
	if o.has(sysKonnectivity) {
		out = append(out, knpModule+" "+depVersion(knpModule)+" (proxy-server, proxy-agent and pkg/agent)")
	}
	if o.has(sysBackhaul) {
		out = append(out, "backhaul-hub and backhaul-agent "+backhaulVersion(ctx, o.bin))
	}
	return append(out, "Go "+runtime.Version()+" for everything built here")
}
