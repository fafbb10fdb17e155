package main

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"backhaul.io/backhaul/test/harness"
	"backhaul.io/backhaul/tunnel"
)

// targetStorm is the goal: every agent of a 10,000-agent fleet
// that dials at once is registered within this time, on the 2-core
// reference machine.
const targetStorm = 60 * time.Second

// stormReplicas is how many replicas take the storm.
const stormReplicas = 3

// stormVIP is the load-balanced address the simulated agents dial (the HA
// e2e suite uses 10.253.80.1; 91 is the host cluster's index).
var stormVIP = netip.AddrFrom4([4]byte{10, 253, haHostIndex, 1})

const stormVIPPort = 8443

// stormFigures are the storm's rows, for failures.
func stormFigures(n int) []string {
	return []string{
		fmt.Sprintf("HA storm: %d agents registered on %d replicas", n, stormReplicas),
		"  503 busy answers (hub metric)",
		fmt.Sprintf("HA kill -9 of one replica: %d registered on %d", n, stormReplicas-1),
		"  hub RSS per idle session",
		"  hub CPU per 1000 idle sessions",
	}
}

func failStorm(t *table, n int, err error) {
	for _, f := range stormFigures(n) {
		t.add(row{Figure: f, Err: err})
	}
}

// stormEnv is the storm's replicas and fleet; stop tears down what is set.
type stormEnv struct {
	host     *haHost
	replicas []*haReplica
	vip      *harness.VIP
	fleet    *simFleet
	cancel   context.CancelFunc // ends the fleet
}

func (e *stormEnv) stop() {
	if e.cancel != nil {
		e.cancel()
		e.fleet.wait()
	}
	if e.vip != nil {
		_ = e.vip.Close()
	}
	for _, r := range e.replicas {
		r.stop()
		_ = e.host.withdrawPeer(context.Background(), r.name)
	}
}

// replicaSample is one replica's resources at one moment.
type replicaSample struct {
	cpu      time.Duration
	rss      float64
	sessions float64
	gor      float64
	heap     float64
	stack    float64
}

func sampleReplicas(ctx context.Context, rs []*haReplica) (map[string]replicaSample, error) {
	out := map[string]replicaSample{}
	for _, r := range rs {
		rss, err := vmRSS(r.pid())
		if err != nil {
			return nil, err
		}
		m, err := r.metrics(ctx)
		if err != nil {
			return nil, err
		}
		out[r.name] = replicaSample{cpu: procUsage(r.pid()).cpu, rss: rss, sessions: m[mSessions], gor: m[mGo], heap: m[mHeap], stack: m[mStack]}
	}
	return out, nil
}

// benchStorm starts three replicas, lets n simulated agents dial them at
// once, kills one replica and measures how long registration takes each
// time, what the replicas spent, and what they hold per idle session.
func benchStorm(ctx context.Context, o *options, hubBin, dir string, host *haHost, t *table) {
	n := o.haAgents
	figs := stormFigures(n)
	// Rows are added in figs' order as they are measured; a failure marks
	// the rest.
	added := 0
	put := func(r row) {
		t.add(r)
		added++
	}
	fail := func(err error) {
		for _, f := range figs[added:] {
			t.add(row{Figure: f, Err: err})
		}
		added = len(figs)
	}

	// Each agent holds one connection here and one in a replica; the
	// replicas inherit this process's limit.
	var lim syscall.Rlimit
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	before := lim.Cur
	if err := harness.RaiseNoFile(uint64(n) + 4096); err != nil {
		fail(err)
		return
	}
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	if lim.Cur != before {
		t.note("ha storm: raised RLIMIT_NOFILE of the bench (and so of the replicas) from %d to %d (hard %d).", before, lim.Cur, lim.Max)
	} else {
		t.note("ha storm: RLIMIT_NOFILE %d (hard %d) is enough for %d agents; not raised.", lim.Cur, lim.Max, n)
	}

	clusters := make([]string, n)
	for i := range clusters {
		clusters[i] = fmt.Sprintf("cluster-%05d", i)
	}
	files, err := writeHAFiles(filepath.Join(dir, "storm-pki"), []string{stormVIP.String()})
	if err != nil {
		fail(err)
		return
	}
	tokens, err := files.writeAgentTokens(clusters)
	if err != nil {
		fail(err)
		return
	}
	e := &stormEnv{host: host}
	defer e.stop()
	progress("ha storm: starting %d replicas with %d agent tokens", stormReplicas, n)
	for i := range stormReplicas {
		r, err := startReplica(ctx, hubBin, dir, fmt.Sprintf("hub-%d", i), host, files)
		if r != nil {
			e.replicas = append(e.replicas, r)
		}
		if err != nil {
			fail(err)
			return
		}
	}
	if err := waitPeers(ctx, e.replicas, 60*time.Second); err != nil {
		fail(fmt.Errorf("peer connections: %w", err))
		return
	}
	idle, err := sampleReplicas(ctx, e.replicas)
	if err != nil {
		fail(err)
		return
	}
	waited, busy, err := waitQuiet(ctx, quietBusy, o.settleLimit)
	if err != nil {
		fail(err)
		return
	}
	t.note("ha storm: %d replicas up and peered; waited %s for the machine to settle (CPU %.0f%% busy).",
		stormReplicas, waited.Round(100*time.Millisecond), busy*100)

	// The replicas behind one address, as a Service's ClusterIP or an L4
	// load balancer puts them: each new connection to a random replica,
	// a kept-alive one stays where it is.
	e.vip, err = harness.NewVIP(harness.VIPConfig{Name: "bench_storm", Addr: stormVIP, Port: stormVIPPort})
	if err != nil {
		fail(fmt.Errorf("load balancer: %w", err))
		return
	}
	for _, r := range e.replicas {
		if err := e.vip.Add(r.backend(host)); err != nil {
			fail(fmt.Errorf("load balancer: %w", err))
			return
		}
	}
	fctx, cancel := context.WithCancel(ctx)
	e.fleet, e.cancel = newSimFleet("wss://"+e.vip.String(), tlsSettings{CAPEM: files.ca.CertPEM}.config()), cancel
	for i := range n {
		e.fleet.add(fctx, clusters[i], tokens[i])
	}
	others := hostProcesses(host)
	meter := replicaMeter(e.replicas, others)

	// The storm: every agent dials at once.
	progress("ha storm: %d agents dial %d replicas at once", n, stormReplicas)
	dir0, dirErr := hostDirectoryCost(ctx, host)
	cpu0 := meter.sample()
	health := watchHealth(ctx, e.replicas)
	e.fleet.expectAll(n)
	t0 := time.Now()
	e.fleet.begin()
	profileDone := profileReplica(ctx, o, e.replicas[0], "ha-storm-"+e.replicas[0].name, 30)
	stopSelf := profileSelf(o, "ha-storm-agents")
	storm, err := waitRegistered(ctx, e.replicas, e.fleet, n, t0, stormLimit(n))
	stopSelf()
	cpu1 := meter.sample()
	stormHealth := health.stop()
	stormDone := time.Now()
	<-profileDone
	if err != nil {
		fail(err)
		return
	}
	dir1, err := hostDirectoryCost(ctx, host)
	if dirErr == nil {
		dirErr = err
	}
	stormCounts := e.fleet.counts()
	hubBusy, err := sumMetric(ctx, e.replicas, mBusy)
	if err != nil {
		fail(err)
		return
	}
	put(row{Figure: figs[0], Direct: "-", Backhaul: storm.String(), Target: fmt.Sprintf("≤%s (%s)", targetStorm, verdict(storm.done && storm.all <= targetStorm))})
	put(row{Figure: figs[1], Direct: "-", Backhaul: fmt.Sprintf("%.0f", hubBusy), Target: "-"})
	t.note("ha storm: registered 50%% / 90%% / 99%% / all after %s; agents saw %d upgrades answered 503 (Retry-After),",
		storm.milestones(), stormCounts.busy)
	t.note("  %d other refusals and %d dials with no answer (the agent's 15 s handshake timeout, resets), in %d dials.",
		stormCounts.refused, stormCounts.failed, stormCounts.dials)
	t.note("  CPU seconds from /proc during the storm: %s.", meter.describe(cpu0, cpu1))
	t.note("  /healthz probed every second with the kubelet's 1 s timeout: %s.", stormHealth)
	if dirErr == nil {
		t.note("  host apiserver, the directory during the storm: %s.", dir1.sub(dir0))
	}

	// Steady state on three replicas.
	steady3, err := steadyState(ctx, o, host, e.replicas, "ha-idle3")
	if err != nil {
		fail(err)
		return
	}
	t.note("ha storm, idle on %d replicas: %s.", stormReplicas, steady3.describe(idle))
	t.note("  HubReplica objects in the host (the directory): %s;", hubReplicaSizes(ctx, host, e.replicas))
	t.note("  in the %s idle window the host apiserver counted %s.", steady3.window, steady3.directory)

	// The agents' backoff starts over only once a session has lasted
	// ResetAfter; a crash right after the storm would time backoff left
	// over from it, not a crash of a settled fleet.
	reset := tunnel.DefaultBackoff().ResetAfter
	if wait := time.Until(stormDone.Add(reset + 5*time.Second)); !o.quick && wait > 0 {
		progress("ha storm: %s until every session has lasted the agents' backoff reset (%s)", wait.Round(time.Second), reset)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			fail(ctx.Err())
			return
		}
	}

	// A crash: kill -9 one replica (the singleton leader, which has the
	// most to hand over); the balancer stops sending it connections at
	// once and its endpoint goes, as the endpoint controller and
	// kube-proxy would remove it a moment later.
	victim, leader, survivors := pickVictim(ctx, e.replicas)
	progress("ha storm: kill -9 %s; its %.0f agents move to the other %d", victim.name, steady3.after[victim.name].sessions, len(survivors))
	busyBefore, _ := sumMetric(ctx, survivors, mBusy)
	countsBefore := e.fleet.counts()
	meter = replicaMeter(survivors, others)
	dir0, dirErr = hostDirectoryCost(ctx, host)
	cpu0 = meter.sample()
	health = watchHealth(ctx, survivors)
	e.fleet.expectAll(n)
	t1 := time.Now()
	victim.proc.Kill()
	if err := e.vip.Remove(victim.backend(host)); err != nil {
		fail(fmt.Errorf("load balancer: %w", err))
		return
	}
	go func() { _ = host.withdrawPeer(context.WithoutCancel(ctx), victim.name) }()
	replicasSeen := make(chan string, 1)
	go func() { replicasSeen <- waitReplicaCount(ctx, survivors, t1, 45*time.Second) }()
	profileDone = profileReplica(ctx, o, survivors[0], "ha-crash-"+survivors[0].name, 20)
	crash, err := waitRegistered(ctx, survivors, e.fleet, n, t1, stormLimit(n))
	cpu1 = meter.sample()
	crashHealth := health.stop()
	<-profileDone
	if err != nil {
		fail(err)
		return
	}
	busyAfter, _ := sumMetric(ctx, survivors, mBusy)
	crashCounts := e.fleet.counts().sub(countsBefore)
	put(row{Figure: figs[2], Direct: "-", Backhaul: crash.String(), Target: "-"})
	role := "not the singleton leader"
	if leader {
		role = "the singleton leader"
	}
	t.note("ha kill -9 of %s (%s): %d sessions lost; registered 50%% / 90%% / 99%% / all after %s;",
		victim.name, role, crashCounts.lost, crash.milestones())
	t.note("  %d dials, %d answered 503 (hub metric: %.0f), %d other refusals, %d without an answer; CPU seconds: %s.",
		crashCounts.dials, crashCounts.busy, busyAfter-busyBefore, crashCounts.refused, crashCounts.failed, meter.describe(cpu0, cpu1))
	t.note("  /healthz as above: %s.", crashHealth)
	if dir1, err := hostDirectoryCost(ctx, host); err == nil && dirErr == nil {
		t.note("  host apiserver, the directory during the recovery: %s.", dir1.sub(dir0))
	}
	t.note("  the survivors' backhaul_hub_replicas read %d after %s (the directory's lease on the dead entry).", len(survivors), <-replicasSeen)
	if o.quick {
		t.note("  (-quick: killed before the agents' backoff reset, so the recovery includes backoff left from the storm.)")
	}

	steady2, err := steadyState(ctx, o, host, survivors, "ha-idle2")
	if err != nil {
		fail(err)
		return
	}
	t.note("ha storm, idle on %d replicas after the crash: %s.", len(survivors), steady2.describe(idle))
	t.note("  HubReplica objects: %s;", hubReplicaSizes(ctx, host, survivors))
	t.note("  in the %s idle window the host apiserver counted %s.", steady2.window, steady2.directory)
	put(row{Figure: figs[3], Direct: "-",
		Backhaul: fmt.Sprintf("%s (3) / %s (2)", fmtKiB(steady3.rssPerSession(idle)), fmtKiB(steady2.rssPerSession(idle))),
		Target:   "-"})
	put(row{Figure: figs[4], Direct: "-",
		Backhaul: fmt.Sprintf("%s/s (3) / %s/s (2)", fmtDur(steady3.cpuPer1000()), fmtDur(steady2.cpuPer1000())),
		Target:   "-"})
	t.note("ha storm: %d simulated agents in this process, each a tunnel.Supervisor with one connection (tunnel.Dialer,", n)
	t.note("  the agent's default backoff, Retry-After honoured), dialling %s: nftables DNAT to a random replica per new", e.vip)
	t.note("  connection (kube-proxy's nftables mode; harness.VIP). They answer the replicas' /readyz and /version probes.")
	t.note("  Tokens from --agent-token-file; no Cluster objects, so no Cluster status writes.")
	t.note("  Agents, replicas, the host's apiserver and etcd share the same %d cores.", runtime.NumCPU())
}

// stormLimit bounds the wait for registration: well past the target, so a
// miss is measured rather than cut off.
func stormLimit(n int) time.Duration { return max(3*time.Minute, time.Duration(n)*20*time.Millisecond) }

// pickVictim returns the singleton leader (else the first replica),
// whether it leads, and the others.
func pickVictim(ctx context.Context, rs []*haReplica) (victim *haReplica, leader bool, rest []*haReplica) {
	v := 0
	for i, r := range rs {
		if m, err := r.metrics(ctx); err == nil && m[mLeading] == 1 {
			v, leader = i, true
			break
		}
	}
	for i, r := range rs {
		if i != v {
			rest = append(rest, r)
		}
	}
	return rs[v], leader, rest
}
