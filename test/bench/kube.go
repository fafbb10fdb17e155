package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"backhaul.io/backhaul/test/harness"
)

const (
	// The member's name and subnet index; e2e uses 40 and up.
	memberName  = "bench"
	memberIndex = 90
	// callerGroup is bound to cluster-admin in the member, so the gateway's
	// caller may read what the direct admin reads.
	callerUser  = "bench-caller"
	callerGroup = "backhaul-bench-callers"
	// kubePath is the small GET of the gateway figure.
	kubePath = "/api/v1/namespaces/default"
	// kubeBlocks interleaves direct and gateway runs (see latencyBlocks);
	// fewer than the tunnel's because each direct block is a process start.
	kubeBlocks = 2

	targetGatewayP50 = 250 * time.Microsecond
	// quietBusy is the CPU share below which the member counts as settled.
	quietBusy = 0.10
)

// benchKube starts a member cluster with a hub and an agent in front of it,
// and measures the gateway figures and then, on the same member, hub and
// agent, the streams figures.
func benchKube(ctx context.Context, o *options, hubBin, agentBin, dir string, t *table) {
	fail := func(err error) {
		t.add(row{Figure: figGateway, Err: err}, row{Figure: figImpersonation, Err: err})
		if !o.skipStreams {
			failStreams(t, o, err)
		}
	}
	if os.Geteuid() != 0 {
		fail(errors.New("needs root for network namespaces (or pass -skip-kube)"))
		return
	}
	progress("kube: starting etcd and kube-apiserver in namespace %s%s", harness.NetnsPrefix, memberName)
	env, err := startKube(ctx, o, hubBin, agentBin, filepath.Join(dir, "kube"))
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
	t.note("member apiserver ready in %s; then waited %s for the machine to settle (CPU %.0f%% busy)",
		env.member.StartupTime.Round(100*time.Millisecond), waited.Round(100*time.Millisecond), busy*100)
	benchGateway(ctx, o, env, t)
	if !o.skipStreams && ctx.Err() == nil {
		benchStreams(ctx, o, env, dir, t)
	}
	if !o.skipWatches && ctx.Err() == nil {
		benchWatches(ctx, o, env, t)
	}
}

// Figures of benchGateway.
const (
	figGateway       = "apiserver GET via gateway p50 / p99"
	figImpersonation = "  vs direct with impersonation"
)

// benchGateway compares a small GET through the hub's L7 gateway (hub and
// agent as real processes) with the same GET made directly inside the
// member's namespace, where the apiserver is reachable.
func benchGateway(ctx context.Context, o *options, env *kubeEnv, t *table) {
	fail := func(err error) {
		t.add(row{Figure: figGateway, Err: err}, row{Figure: figImpersonation, Err: err})
	}
	m, hub := env.member, env.hub

	gw := newClient(clientConfig{tls: tlsSettings{CAPEM: hub.CA.CertPEM}, keepAlive: true})
	defer gw.CloseIdleConnections()
	gwRun := latencyRun{URL: hub.ClusterURL(memberName) + kubePath, Header: bearer(callerToken)}
	adminRun := latencyRun{URL: m.InternalURL + kubePath, Header: bearer(m.AdminToken)}
	impRun := latencyRun{URL: adminRun.URL, Header: bearer(m.AdminToken)}
	// What the agent sends for this caller (the hub's static token file
	// gives the user name as its uid).
	impRun.Header.Set("Impersonate-User", callerUser)
	impRun.Header.Set("Impersonate-Uid", callerUser)
	impRun.Header.Set("Impersonate-Group", callerGroup)

	meter := cpuMeter{"hub": hub.Process().PID(), "agent": env.agent.PID()}
	if procs, err := netnsProcesses(m.Netns.Name); err == nil {
		meter["apiserver"], meter["etcd"] = procs["kube-apiserver"], procs["etcd"]
	}
	inNetns := func(r latencyRun) ([]time.Duration, error) { return directInNetns(ctx, m, r) }
	direct := &kubeStep{what: "direct", base: adminRun, run: inNetns}
	gateway := &kubeStep{what: "gateway", base: gwRun, run: func(r latencyRun) ([]time.Duration, error) { return sequential(ctx, gw, r) }}
	imp := &kubeStep{what: "direct with impersonation", base: impRun, run: inNetns}

	progress("kube: %d sequential GETs direct (in the namespace), via the gateway, and direct with impersonation", o.kubeRequests)
	for b := range kubeBlocks {
		for _, st := range []*kubeStep{direct, gateway, imp} {
			warm := 0
			if b == 0 {
				warm = 200
			}
			if err := st.measure(meter, warm, o.kubeRequests/kubeBlocks); err != nil {
				fail(err)
				return
			}
		}
	}
	profileGateway(ctx, o, env, gw, gwRun, 10*time.Second)
	t.add(latencyRow(figGateway, direct.lat, gateway.lat, targetGatewayP50))
	t.add(latencyRow(figImpersonation, imp.lat, gateway.lat, 0))
	t.note("apiserver direct: the same Go client in the member's namespace against %s as admin (system:masters);", m.InternalURL)
	t.note("  \"with impersonation\" adds the Impersonate-* headers the agent sends, so the apiserver does the same RBAC work")
	t.note("  as for a gateway request; what remains is the hub, the tunnel and the agent, and their CPU on the same cores.")
	t.note("CPU per apiserver GET, direct → gateway: apiserver %s → %s, etcd %s → %s, plus hub %s and agent %s;",
		fmtDur(direct.perRequest("apiserver").cpu), fmtDur(gateway.perRequest("apiserver").cpu),
		fmtDur(direct.perRequest("etcd").cpu), fmtDur(gateway.perRequest("etcd").cpu),
		fmtDur(gateway.perRequest("hub").cpu), fmtDur(gateway.perRequest("agent").cpu))
	t.note("  voluntary context switches per gateway request: hub %.1f, agent %.1f.",
		gateway.perRequest("hub").switches, gateway.perRequest("agent").switches)
}

// kubeStep is one side of the apiserver comparison, measured in blocks.
type kubeStep struct {
	what  string
	base  latencyRun
	run   func(latencyRun) ([]time.Duration, error)
	lat   []time.Duration
	usage map[string]usage // CPU of the metered processes during the runs
	n     int              // requests charged to usage, warm-ups included
}

// measure runs one block and adds its latencies and CPU to the step's.
func (st *kubeStep) measure(meter cpuMeter, warmup, n int) error {
	r := st.base
	r.Warmup, r.N = warmup, n
	before := meter.sample()
	ds, err := st.run(r)
	if err != nil {
		return fmt.Errorf("%s: %w", st.what, err)
	}
	after := meter.sample()
	if st.usage == nil {
		st.usage = map[string]usage{}
	}
	for name := range meter {
		st.usage[name] = st.usage[name].add(after[name].sub(before[name]))
	}
	// Warm-up requests are charged too: CPU cannot be told apart per
	// request, so the per-request figure divides by all of them.
	st.n += warmup + n
	st.lat = append(st.lat, ds...)
	return nil
}

func (st *kubeStep) perRequest(name string) usage {
	u := st.usage[name]
	if st.n == 0 {
		return usage{}
	}
	return usage{cpu: u.cpu / time.Duration(st.n), switches: u.switches / float64(st.n)}
}

// kubeEnv is what startKube started; stop tears down whatever is set.
type kubeEnv struct {
	member *harness.Member
	hub    *harness.Hub
	agent  *harness.Process
}

// stop stops the agent before the hub, so it does not log a lost tunnel,
// and the member (which deletes its namespace) last.
func (e *kubeEnv) stop() {
	if e.agent != nil {
		e.agent.Stop()
	}
	if e.hub != nil {
		e.hub.Stop()
	}
	if e.member != nil {
		_ = e.member.Stop()
	}
}

// startKube starts the member, a hub process with a caller bound to
// cluster-admin in the member, and an agent process in the member's
// namespace, and waits until the gateway reaches the member. The caller
// stops the returned env, error or not.
func startKube(ctx context.Context, o *options, hubBin, agentBin, dir string) (*kubeEnv, error) {
	e := &kubeEnv{}
	// Only this bench's own namespace, and only if no live process holds it.
	if _, err := harness.CleanupStale(harness.NetnsPrefix + memberName); err != nil {
		return e, err
	}
	if _, err := harness.LocateBinaries(); err != nil {
		return e, fmt.Errorf("%w (run `make kube-bins deps`)", err)
	}
	var err error
	e.member, err = harness.StartMember(ctx, harness.MemberConfig{Name: memberName, Index: memberIndex, Dir: filepath.Join(dir, "member")})
	if err != nil {
		return e, err
	}
	if _, stderr, err := e.member.Kubectl(ctx, "create", "clusterrolebinding", callerGroup, "--clusterrole=cluster-admin", "--group="+callerGroup); err != nil {
		return e, fmt.Errorf("grant %s: %w: %s", callerGroup, err, stderr)
	}
	e.hub, err = harness.StartHub(ctx, harness.HubConfig{
		Binary: hubBin, Dir: filepath.Join(dir, "hub"), HostIPs: []string{e.member.Netns.HostIP.String()},
		Clusters: []string{memberName},
		Callers:  map[string]harness.Caller{"bench": {Token: callerToken, User: callerUser, Groups: []string{callerGroup}}},
		Args:     hubArgs(o),
	})
	if err != nil {
		return e, err
	}
	if e.agent, err = harness.StartAgent(ctx, e.hub, e.member, harness.AgentConfig{Binary: agentBin, Cluster: memberName, AdminPort: agentAdminPort, Args: profilingArgs(o)}); err != nil {
		return e, err
	}
	c := newClient(clientConfig{tls: tlsSettings{CAPEM: e.hub.CA.CertPEM}, keepAlive: true})
	defer c.CloseIdleConnections()
	err = harness.WaitFor(ctx, 30*time.Second, 200*time.Millisecond, func() error {
		_, err := get(ctx, c, e.hub.ClusterURL(memberName)+"/readyz", bearer(callerToken), make([]byte, 4096))
		return err
	})
	if err != nil {
		return e, fmt.Errorf("member not reachable through the gateway: %w\nagent log:\n%s", err, e.agent.Tail(20))
	}
	return e, nil
}

// profilingArgs turns on /debug/pprof/ on hub and agent with -profile.
func profilingArgs(o *options) []string {
	if o.profileDir == "" {
		return nil
	}
	return []string{"--profiling"}
}

// hubArgs lets the bench's one caller hold every watch of the watches
// figure (the default allows a caller 100 streams).
func hubArgs(o *options) []string {
	return append(profilingArgs(o), fmt.Sprintf("--max-streams-per-caller=%d", o.watches+100))
}

// callerToken is the hub caller's static token; it only ever exists in this
// run's temporary files and the hub's memory.
const callerToken = "backhaul-bench-caller-token-0123456789"

func bearer(token string) http.Header {
	h := http.Header{}
	h.Set("Authorization", "Bearer "+token)
	return h
}
