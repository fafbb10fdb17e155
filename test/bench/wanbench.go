package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"backhaul.io/backhaul/hub/frontend"
	"backhaul.io/backhaul/test/harness"
	"backhaul.io/backhaul/tunnel"
)

// The WAN figures (issue 17, item 8): the agent reaches the hub over an
// emulated WAN (wanLink: -wan-rtt, -wan-rate each way), and every direct
// figure crosses an identical link from the root namespace to the member.
// A caller sits next to the hub, as in a cloud VPC; the member is far away.
//
//   - kubectl get pods, a fresh kubectl process per run, through the hub's
//     gateway against the same kubectl straight at the member's API server
//     over the link; and the same GET from one kept-alive Go client, where
//     neither side pays a handshake;
//   - how long a watch takes to start (its response headers) from that
//     kept-alive client over HTTP/2: through the hub each watch is a new
//     tunnel stream, so this shows what opening one costs;
//   - an exec round trip (`echo x` over SPDY, a new connection each, as
//     kubectl's) to a pod on a test kubelet in the member's namespace;
//   - a 64 MiB download from a TCP source in the member's namespace,
//     through the hub's CONNECT front end against a direct TCP connection;
//   - how long hub and agent take to notice that the link went dead (cut
//     into a black hole: no FIN, no RST).
//
// The section starts its own member, hub and agent (it does not need
// -skip-kube off), on a subnet index no other bench or e2e suite uses.

const (
	wanMemberName  = "bench-wan"
	wanMemberIndex = 94
	// wanSourcePort is where the download source listens, on the member
	// namespace's veth address, which the node-mode agent advertises.
	wanSourcePort = 7002
	wanNode       = "bench-wan-node"
	// wanPodsPath is what `kubectl get pods` asks for.
	wanPodsPath = "/api/v1/namespaces/default/pods?limit=500"
	// wanDownload is the size of the download figure.
	wanDownload = 64 << 20
	// wanNoticeLimit bounds the wait for a cut to be noticed; the design's
	// goal is ~30 s on both sides, the default keepalive 15 s + 10 s.
	wanNoticeLimit = 90 * time.Second
	targetNotice   = 30 * time.Second
)

// Figures of benchWAN.
const (
	figWANKubectl  = "WAN: kubectl get pods p50 / p99"
	figWANKeptGET  = "WAN: GET pods, kept-alive client p50 / p99"
	figWANWatch    = "WAN: watch start, kept-alive h2 p50 / p99"
	figWANExec     = "WAN: exec `echo x` round trip p50 / p99"
	figWANDownload = "WAN: 64 MiB download"
	figWANNotice   = "WAN: link cut noticed, hub / agent"
)

// wanEnv is what startWAN started; stop tears down whatever is set.
type wanEnv struct {
	member *harness.Member
	hub    *harness.Hub
	agent  *harness.Process
	source *harness.Process
	// hubLink is agent→hub; apiLink and srcLink are the direct client's
	// links to the member's API server and the download source.
	hubLink, apiLink, srcLink *wanLink
	// streams is the test kubelet and pod of the exec figure.
	streams *streamsEnv
}

// stop stops the agent before its link and the hub, and the member (which
// deletes its namespace) last.
func (e *wanEnv) stop() {
	if e.agent != nil {
		e.agent.Stop()
	}
	for _, l := range []*wanLink{e.hubLink, e.apiLink, e.srcLink} {
		if l != nil {
			_ = l.Close()
		}
	}
	if e.source != nil {
		e.source.Stop()
	}
	if e.streams != nil {
		e.streams.stop()
	}
	if e.hub != nil {
		e.hub.Stop()
	}
	if e.member != nil {
		_ = e.member.Stop()
	}
}

func benchWAN(ctx context.Context, o *options, dir string, t *table) {
	figs := []string{figWANKubectl, figWANKeptGET, figWANWatch, figWANExec, figWANDownload, figWANNotice}
	fail := func(err error) {
		for _, f := range figs {
			t.add(row{Figure: f, Err: err})
		}
	}
	switch {
	case os.Geteuid() != 0:
		fail(errors.New("needs root for network namespaces (or pass -skip-wan)"))
		return
	case o.wanRTT <= 0 || o.wanRate < 0:
		fail(fmt.Errorf("-wan-rtt %s, -wan-rate %g: want a positive round trip and a rate ≥ 0", o.wanRTT, o.wanRate))
		return
	}
	progress("wan: building backhaul-hub and backhaul-agent")
	hubBin, agentBin, err := harness.BackhaulBinaries(ctx)
	if err != nil {
		fail(fmt.Errorf("build: %w", err))
		return
	}
	hubBin, agentBin = cmp.Or(o.hubBinary, hubBin), cmp.Or(o.agentBinary, agentBin)
	bins, err := harness.LocateBinaries()
	if err != nil {
		fail(fmt.Errorf("%w (run `make kube-bins deps`)", err))
		return
	}
	progress("wan: starting member %s, hub and agent over a %s, %s link", wanMemberName, o.wanRTT, fmtLinkRate(o.wanRate))
	env, err := startWAN(ctx, o, hubBin, agentBin, filepath.Join(dir, "wan"))
	defer env.stop()
	if err != nil {
		fail(err)
		return
	}
	waited, busy, err := waitQuiet(ctx, quietBusy, o.settleLimit)
	if err != nil {
		fail(err)
		return
	}
	t.note("WAN rows: %s round trip and %s each way, emulated in user space (test/bench/wan.go: handshake RTT, delay, token",
		o.wanRTT, fmtLinkRate(o.wanRate))
	t.note("  bucket; no loss). Backhaul: caller → hub on loopback, agent → hub over the link; direct: the same client in the")
	t.note("  root namespace → the member over an identical link. Member ready in %s, then waited %s to settle (CPU %.0f%% busy).",
		env.member.StartupTime.Round(100*time.Millisecond), waited.Round(100*time.Millisecond), busy*100)
	if d, err := linkProbe(ctx, env.srcLink.Addr); err == nil {
		t.note("  link check: a fresh TCP connection and a 1-byte request over the direct link took %s (%.1f RTT; 2 expected).",
			fmtDur(d), float64(d)/float64(o.wanRTT))
	}

	runs, kept, downloads := 15, 50, max(o.downloads, 1)
	if o.quick {
		runs, kept = 7, 20
	}
	if r, err := wanKubectl(ctx, o, env, bins.Kubectl, filepath.Join(dir, "wan"), runs, t); err != nil {
		t.add(row{Figure: figWANKubectl, Err: err})
	} else {
		t.add(r)
	}
	if ctx.Err() == nil {
		if r, err := wanKeptAlive(ctx, o, env, kept); err != nil {
			t.add(row{Figure: figWANKeptGET, Err: err})
		} else {
			t.add(r)
		}
	}
	if ctx.Err() == nil {
		if r, err := wanWatchStart(ctx, o, env, kept); err != nil {
			t.add(row{Figure: figWANWatch, Err: err})
		} else {
			t.add(r)
		}
	}
	if ctx.Err() == nil {
		if r, err := wanExec(ctx, o, env, runs); err != nil {
			t.add(row{Figure: figWANExec, Err: err})
		} else {
			t.add(r)
		}
	}
	if ctx.Err() == nil {
		if r, err := wanDownloads(ctx, o, env, downloads, t); err != nil {
			t.add(row{Figure: figWANDownload, Err: err})
		} else {
			t.add(r)
		}
	}
	// Last: it kills the tunnel.
	if ctx.Err() == nil {
		if r, err := wanNotice(ctx, env, t); err != nil {
			t.add(row{Figure: figWANNotice, Err: err})
		} else {
			t.add(r)
		}
	}
}

// startWAN starts the member with the download source in its namespace,
// a hub, the three links and a node-mode agent that dials the hub through
// hubLink, and waits until the gateway reaches the member. The caller
// stops the returned env, error or not.
func startWAN(ctx context.Context, o *options, hubBin, agentBin, dir string) (*wanEnv, error) {
	e := &wanEnv{}
	if _, err := harness.CleanupStale(harness.NetnsPrefix + wanMemberName); err != nil {
		return e, err
	}
	var err error
	e.member, err = harness.StartMember(ctx, harness.MemberConfig{Name: wanMemberName, Index: wanMemberIndex, Dir: filepath.Join(dir, "member")})
	if err != nil {
		return e, err
	}
	m := e.member
	if _, stderr, err := m.Kubectl(ctx, "create", "clusterrolebinding", callerGroup, "--clusterrole=cluster-admin", "--group="+callerGroup); err != nil {
		return e, fmt.Errorf("grant %s: %w: %s", callerGroup, err, stderr)
	}
	// The direct client dials in from the root namespace, through its link.
	for _, p := range []int{harness.APIServerPort, wanSourcePort} {
		if err := m.Netns.AllowInbound(p); err != nil {
			return e, err
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return e, err
	}
	src := net.JoinHostPort(m.Netns.NSIP.String(), strconv.Itoa(wanSourcePort))
	if e.source, err = harness.Start(ctx, "bench-wan-source", dir, m.Netns.Command(context.Background(), exe, "-internal-source", src)); err != nil {
		return e, err
	}
	if e.streams, err = startStreams(ctx, m, filepath.Join(dir, "streams")); err != nil {
		return e, fmt.Errorf("exec pod: %w", err)
	}
	e.hub, err = harness.StartHub(ctx, harness.HubConfig{
		Binary: hubBin, Dir: filepath.Join(dir, "hub"), HostIPs: []string{m.Netns.HostIP.String()},
		Clusters: []string{wanMemberName},
		Callers:  map[string]harness.Caller{"bench": {Token: callerToken, User: callerUser, Groups: []string{callerGroup}}},
		Args:     profilingArgs(o),
	})
	if err != nil {
		return e, err
	}
	bps := o.wanRate * 1e6 / 8
	// The agent in the namespace reaches the root namespace at HostIP.
	if e.hubLink, err = newWANLink(net.JoinHostPort(m.Netns.HostIP.String(), "0"), "127.0.0.1:"+strconv.Itoa(e.hub.Port), o.wanRTT, bps); err != nil {
		return e, err
	}
	if e.apiLink, err = newWANLink("127.0.0.1:0", net.JoinHostPort(m.Netns.NSIP.String(), strconv.Itoa(harness.APIServerPort)), o.wanRTT, bps); err != nil {
		return e, err
	}
	if e.srcLink, err = newWANLink("127.0.0.1:0", src, o.wanRTT, bps); err != nil {
		return e, err
	}
	e.agent, err = harness.StartAgent(ctx, e.hub, m, harness.AgentConfig{
		Binary: agentBin, Cluster: wanMemberName, AdminPort: agentAdminPort,
		HubURL: "wss://" + e.hubLink.Addr,
		// Node mode, advertising the namespace's address, lets a CONNECT
		// reach the source on wanSourcePort (the "kubelet port").
		Args: append([]string{"--node-name", wanNode, "--node-addresses", m.Netns.NSIP.String(),
			"--kubelet-port", strconv.Itoa(wanSourcePort)}, profilingArgs(o)...),
	})
	if err != nil {
		return e, err
	}
	c := newClient(clientConfig{tls: tlsSettings{CAPEM: e.hub.CA.CertPEM}, keepAlive: true})
	defer c.CloseIdleConnections()
	err = harness.WaitFor(ctx, 30*time.Second, 200*time.Millisecond, func() error {
		_, err := get(ctx, c, e.hub.ClusterURL(wanMemberName)+"/readyz", bearer(callerToken), make([]byte, 4096))
		return err
	})
	if err != nil {
		return e, fmt.Errorf("member not reachable through the gateway over the link: %w\nagent log:\n%s", err, e.agent.Tail(20))
	}
	err = harness.WaitFor(ctx, 10*time.Second, 100*time.Millisecond, func() error {
		_, err := linkProbe(ctx, e.srcLink.Addr)
		return err
	})
	if err != nil {
		return e, fmt.Errorf("download source not reachable over the direct link: %w\n%s", err, e.source.Tail(10))
	}
	return e, nil
}

// wanKubectl times `kubectl get pods`, a fresh process per run, through
// the hub and straight at the API server over the link, runs interleaved.
// Each side first runs once to fill its discovery cache (as a user's
// kubectl has), then once at -v=6 to count the requests a run makes.
func wanKubectl(ctx context.Context, o *options, env *wanEnv, kubectl, dir string, runs int, t *table) (row, error) {
	hubCfg, directCfg := filepath.Join(dir, "hub.kubeconfig"), filepath.Join(dir, "direct.kubeconfig")
	if err := env.hub.WriteKubeconfig(hubCfg, []string{wanMemberName}, callerToken); err != nil {
		return row{}, err
	}
	if err := harness.WriteKubeconfig(directCfg, "https://"+env.apiLink.Addr, env.member.CAPEM, env.member.AdminToken); err != nil {
		return row{}, err
	}
	type side struct {
		what string
		args []string
		lat  []time.Duration
		reqs int
	}
	// Direct, the admin impersonates the hub's caller, so the API server
	// does the same RBAC work as for the request the agent sends.
	direct := &side{what: "direct", args: []string{"--kubeconfig=" + directCfg, "--cache-dir=" + filepath.Join(dir, "direct-cache"),
		"--as=" + callerUser, "--as-group=" + callerGroup}}
	hub := &side{what: "hub", args: []string{"--kubeconfig=" + hubCfg, "--cache-dir=" + filepath.Join(dir, "hub-cache")}}
	kc := func(s *side, extra ...string) (time.Duration, string, error) {
		args := append(append(slices.Clone(s.args), extra...), "get", "pods", "-n", "default")
		cmd := exec.CommandContext(ctx, kubectl, args...)
		var stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = io.Discard, &stderr
		start := time.Now()
		err := cmd.Run()
		d := time.Since(start)
		if err != nil {
			return 0, "", fmt.Errorf("kubectl %s (%s): %w: %s", strings.Join(args, " "), s.what, err, strings.TrimSpace(stderr.String()))
		}
		return d, stderr.String(), nil
	}
	progress("wan: kubectl get pods, %d runs each through the hub and direct", runs)
	for _, s := range []*side{direct, hub} {
		if _, _, err := kc(s); err != nil {
			return row{}, err
		}
		_, log, err := kc(s, "-v=6")
		if err != nil {
			return row{}, err
		}
		s.reqs = strings.Count(log, "\"Response\"")
	}
	for range runs {
		for _, s := range []*side{direct, hub} {
			d, _, err := kc(s)
			if err != nil {
				return row{}, err
			}
			s.lat = append(s.lat, d)
		}
	}
	t.note("WAN kubectl: a fresh kubectl process per run (discovery cached on disk); requests per run at -v=6: direct %d, hub %d.",
		direct.reqs, hub.reqs)
	t.note("  Direct it opens TCP and TLS across the link (2 RTTs) before its GET; through the hub that handshake is on loopback")
	t.note("  and only the GET crosses the link, on the agent's standing tunnel. The kept-alive row takes the handshakes out.")
	return rttRow(figWANKubectl, direct.lat, hub.lat, o.wanRTT), nil
}

// wanKeptAlive times the GET kubectl makes from one Go client whose
// connection stays open, through the gateway and straight over the link.
func wanKeptAlive(ctx context.Context, o *options, env *wanEnv, n int) (row, error) {
	progress("wan: %d kept-alive GETs each through the hub and direct", n)
	gw := newClient(clientConfig{tls: tlsSettings{CAPEM: env.hub.CA.CertPEM}, keepAlive: true})
	defer gw.CloseIdleConnections()
	dc := newClient(clientConfig{tls: tlsSettings{CAPEM: env.member.CAPEM}, keepAlive: true})
	defer dc.CloseIdleConnections()
	gwRun := latencyRun{URL: env.hub.ClusterURL(wanMemberName) + wanPodsPath, Header: bearer(callerToken), Warmup: 3, N: n / 2}
	dRun := latencyRun{URL: "https://" + env.apiLink.Addr + wanPodsPath, Header: bearer(env.member.AdminToken), Warmup: 3, N: n / 2}
	dRun.Header.Set("Impersonate-User", callerUser)
	dRun.Header.Set("Impersonate-Uid", callerUser)
	dRun.Header.Set("Impersonate-Group", callerGroup)
	var direct, hub []time.Duration
	for b := range 2 {
		if b == 1 {
			gwRun.Warmup, dRun.Warmup = 0, 0
		}
		ds, err := sequential(ctx, dc, dRun)
		if err != nil {
			return row{}, fmt.Errorf("direct: %w", err)
		}
		direct = append(direct, ds...)
		hs, err := sequential(ctx, gw, gwRun)
		if err != nil {
			return row{}, fmt.Errorf("hub: %w", err)
		}
		hub = append(hub, hs...)
	}
	return rttRow(figWANKeptGET, direct, hub, o.wanRTT), nil
}

// wanWatchPath is the watch of the watch-start figure.
const wanWatchPath = "/api/v1/namespaces/default/configmaps?watch=1&allowWatchBookmarks=true"

// wanWatchStart times how long a watch takes to start — until its response
// headers, which kube-apiserver sends once the watch is set up — from one
// HTTP/2 client whose connection stays open (as client-go's informers'),
// through the gateway and straight over the link. Through the hub every
// watch needs a tunnel stream of its own, so this is the cost of opening
// one across the link; it is cancelled once started.
func wanWatchStart(ctx context.Context, o *options, env *wanEnv, n int) (row, error) {
	progress("wan: %d watch starts each through the hub and direct", n)
	gw := newClient(clientConfig{tls: tlsSettings{CAPEM: env.hub.CA.CertPEM}, keepAlive: true, http2: true})
	defer gw.CloseIdleConnections()
	dc := newClient(clientConfig{tls: tlsSettings{CAPEM: env.member.CAPEM}, keepAlive: true, http2: true})
	defer dc.CloseIdleConnections()
	direct := bearer(env.member.AdminToken)
	direct.Set("Impersonate-User", callerUser)
	direct.Set("Impersonate-Uid", callerUser)
	direct.Set("Impersonate-Group", callerGroup)
	sides := []struct {
		c      *http.Client
		url    string
		header http.Header
		out    *[]time.Duration
	}{
		{c: dc, url: "https://" + env.apiLink.Addr + wanWatchPath, header: direct},
		{c: gw, url: env.hub.ClusterURL(wanMemberName) + wanWatchPath, header: bearer(callerToken)},
	}
	var times [2][]time.Duration
	for i := range sides {
		sides[i].out = &times[i]
	}
	const warmup = 3
	for i := range warmup + n/2 {
		for _, side := range sides { // alternating, so drift hits both alike
			d, proto, err := watchStart(ctx, side.c, side.url, side.header)
			if err != nil {
				return row{}, fmt.Errorf("watch %d via %s: %w", i, side.url, err)
			}
			if proto != 2 {
				return row{}, fmt.Errorf("watch via %s spoke HTTP/%d, not HTTP/2", side.url, proto)
			}
			if i >= warmup {
				*side.out = append(*side.out, d)
			}
		}
	}
	return rttRow(figWANWatch, times[0], times[1], o.wanRTT), nil
}

// wanExec times n exec round trips (`echo x`, each on a new connection)
// through the hub and straight over the link, alternating, after two of
// each not counted. Over SPDY an exec is several round trips: the
// upgrade, then a reply to each stream the client creates.
func wanExec(ctx context.Context, o *options, env *wanEnv, n int) (row, error) {
	progress("wan: %d execs each through the hub and direct", n)
	viaHub := streamTarget{Host: env.hub.ClusterURL(wanMemberName), Token: callerToken, CAPEM: env.hub.CA.CertPEM, Namespace: streamsNS, Pod: streamsPod}
	direct := viaHub
	direct.Host, direct.Token, direct.CAPEM = "https://"+env.apiLink.Addr, env.member.AdminToken, env.member.CAPEM
	var clients [2]*streamClient
	for i, target := range []streamTarget{direct, viaHub} {
		c, err := newStreamClient(target)
		if err != nil {
			return row{}, err
		}
		clients[i] = c
	}
	const warmup = 2
	var lat [2][]time.Duration
	for i := range warmup + n {
		for k, c := range clients {
			start := time.Now()
			if err := c.execEcho(ctx); err != nil {
				return row{}, fmt.Errorf("%s exec %d: %w", side(k), i, err)
			}
			if i >= warmup {
				lat[k] = append(lat[k], time.Since(start))
			}
		}
	}
	return rttRow(figWANExec, lat[0], lat[1], o.wanRTT), nil
}

// watchStart starts a watch at url and returns how long its response
// headers took, and the HTTP major version; the watch is then cancelled.
func watchStart(ctx context.Context, c *http.Client, url string, header http.Header) (time.Duration, int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, 0, err
	}
	req.Header = header.Clone()
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return 0, 0, err
	}
	d := time.Since(start)
	cancel()
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("%s", resp.Status)
	}
	return d, resp.ProtoMajor, nil
}

// rttRow is latencyRow with the added p50 in round trips, against the
// goal of at most one round trip added.
func rttRow(figure string, direct, backhaul []time.Duration, rtt time.Duration) row {
	r := latencyRow(figure, direct, backhaul, 0)
	d50, _ := percentiles(direct)
	b50, _ := percentiles(backhaul)
	added := float64(b50-d50) / float64(rtt)
	r.Target = fmt.Sprintf("+≤1 RTT p50 (%+.2f RTT, %s)", added, verdict(added <= 1))
	return r
}

// wanDownloads is the median MB/s of runs downloads of wanDownload bytes
// from the source in the member's namespace, each on a new connection,
// through the hub's CONNECT front end and directly over the link; the
// clock starts before the dial on both sides.
func wanDownloads(ctx context.Context, o *options, env *wanEnv, runs int, t *table) (row, error) {
	progress("wan: %d MiB download, %d run(s) each through the hub's CONNECT and direct", wanDownload>>20, runs)
	target := strings.ReplaceAll(env.member.Netns.NSIP.String(), ".", "-") + "." + frontend.NodeLabel + "." +
		wanMemberName + frontend.DefaultClusterSuffix + ":" + strconv.Itoa(wanSourcePort)
	viaHub := func(ctx context.Context) (net.Conn, error) {
		return connectVia(ctx, env.hub.ConnectAddr, target, callerToken)
	}
	direct := func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", env.srcLink.Addr)
	}
	var d, h []float64
	for range runs {
		for _, s := range []struct {
			what  string
			dial  func(context.Context) (net.Conn, error)
			rates *[]float64
		}{{"direct", direct, &d}, {"hub", viaHub, &h}} {
			bps, err := sourceDownload(ctx, s.dial, wanDownload)
			if err != nil {
				return row{}, fmt.Errorf("%s: %w", s.what, err)
			}
			*s.rates = append(*s.rates, bps/1e6)
		}
	}
	r := rateRow(figWANDownload, "MB/s", median(d), median(h), 0)
	if o.wanRate > 0 {
		r.Target = fmt.Sprintf("- (link %s)", fmtRate(o.wanRate/8, "MB/s"))
	}
	t.note("WAN download: raw TCP from a source in the member's namespace, direct over the link and through the hub's CONNECT")
	t.note("  (a node address the agent advertises). One tunnel stream moves about half its window per round trip: with the")
	t.note("  default %s window about %s at this RTT, less the time its data waits in the link's queue.",
		tunnel.Window(tunnel.DefaultStreamWindow), fmtRate(float64(tunnel.DefaultStreamWindow)/2/o.wanRTT.Seconds()/1e6, "MB/s"))
	return r, nil
}

// sourceDownload asks the source (serveSource) for size bytes on a
// connection from dial, checks them and returns bytes per second from
// before the dial to the last byte.
func sourceDownload(ctx context.Context, dial func(context.Context) (net.Conn, error), size int64) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	start := time.Now()
	c, err := dial(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	var req [8]byte
	binary.BigEndian.PutUint64(req[:], uint64(size))
	if _, err := c.Write(req[:]); err != nil {
		return 0, err
	}
	// The source sends byte(i) at offset i of each 256 KiB chunk: byte(i)
	// at every offset i of the stream.
	buf := make([]byte, 256<<10)
	var got int64
	for got < size {
		n, err := c.Read(buf[:min(int64(len(buf)), size-got)])
		for i, b := range buf[:n] {
			if b != byte(got+int64(i)) {
				return 0, fmt.Errorf("byte %d is %d, want %d", got+int64(i), b, byte(got+int64(i)))
			}
		}
		got += int64(n)
		if err != nil {
			return 0, fmt.Errorf("after %d of %d bytes: %w", got, size, err)
		}
	}
	return float64(size) / time.Since(start).Seconds(), nil
}

// linkProbe asks the source for one byte over a fresh connection through
// link address addr and returns how long that took.
func linkProbe(ctx context.Context, addr string) (time.Duration, error) {
	dial := func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
	start := time.Now()
	if _, err := sourceDownload(ctx, dial, 1); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// wanNotice cuts the agent's link into a black hole and times how long the
// hub (its session count) and the agent (its connected gauge) take to
// notice, each polled on its own.
func wanNotice(ctx context.Context, env *wanEnv, t *table) (row, error) {
	hubConnected := func() (bool, error) {
		m, err := scrapeMetrics(ctx, env.hub.AdminURL, "backhaul_hub_sessions")
		return m["backhaul_hub_sessions"] > 0, err
	}
	agentURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", agentAdminPort)
	agentConnected := func() (bool, error) {
		// The agent's admin port is on its namespace's loopback.
		out, err := env.member.Netns.Command(ctx, "curl", "-sSf", "--max-time", "2", agentURL).Output()
		if err != nil {
			return false, fmt.Errorf("agent /metrics: %w", err)
		}
		v, err := metricValue(out, "backhaul_agent_connected")
		return v > 0, err
	}
	for what, f := range map[string]func() (bool, error){"hub": hubConnected, "agent": agentConnected} {
		if up, err := f(); err != nil || !up {
			return row{}, fmt.Errorf("before the cut, the %s reports no session (%v)", what, err)
		}
	}
	progress("wan: cutting the agent's link; waiting for hub and agent to notice (up to %s)", wanNoticeLimit)
	env.hubLink.Cut()
	cut := time.Now()
	var hubAfter, agentAfter time.Duration
	var hubErr, agentErr error
	var wg sync.WaitGroup
	wait := func(f func() (bool, error), every time.Duration, after *time.Duration, errp *error) {
		*errp = harness.WaitFor(ctx, wanNoticeLimit, every, func() error {
			up, err := f()
			if err != nil {
				return err
			}
			if up {
				return errors.New("still reports a session")
			}
			*after = time.Since(cut)
			return nil
		})
	}
	wg.Go(func() { wait(hubConnected, 100*time.Millisecond, &hubAfter, &hubErr) })
	wg.Go(func() { wait(agentConnected, 200*time.Millisecond, &agentAfter, &agentErr) })
	wg.Wait()
	if err := errors.Join(hubErr, agentErr); err != nil {
		return row{}, fmt.Errorf("after the cut: %w", err)
	}
	worst := max(hubAfter, agentAfter)
	t.note("WAN cut: the link drops everything both ways and closes nothing; hub and agent each ping every 15 s and wait 10 s")
	t.note("  for the answer (defaults), so a cut is noticed 10–25 s later depending on where in the ping cycle it falls (one")
	t.note("  sample; both sides' pings started with the session, so they fire together). An idle TCP connection never notices.")
	return row{
		Figure:   figWANNotice,
		Direct:   "-",
		Backhaul: fmt.Sprintf("%.1fs / %.1fs", hubAfter.Seconds(), agentAfter.Seconds()),
		Ratio:    "",
		Target:   fmt.Sprintf("≤%s each (%s)", targetNotice, verdict(worst <= targetNotice)),
	}, nil
}

// metricValue reads an unlabelled sample from Prometheus text exposition.
func metricValue(text []byte, name string) (float64, error) {
	sc := bufio.NewScanner(bytes.NewReader(text))
	for sc.Scan() {
		if n, v, ok := strings.Cut(sc.Text(), " "); ok && n == name {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /metrics", name)
}

// fmtLinkRate is a -wan-rate for notes.
func fmtLinkRate(mbit float64) string {
	if mbit == 0 {
		return "no bandwidth cap"
	}
	return fmt.Sprintf("%g Mbit/s", mbit)
}
