package main

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"time"

	"backhaul.io/backhaul/test/harness"
)

// targetForwardAdded is the goal: a request that reaches a replica
// without the cluster's session, and is forwarded to the one with it,
// takes at most this much longer at p50 than one served locally.
const targetForwardAdded = 300 * time.Microsecond

// forwardBlocks is how many local and forwarded blocks alternate within
// each of the kubeBlocks direct ones.
const forwardBlocks = 5

// Figures of benchForwarding.
const (
	figHALocal     = "HA: apiserver GET via the replica holding the session p50 / p99"
	figHAForwarded = "HA: apiserver GET via the other replica (forwarded) p50 / p99"
	figHAAdded     = "  forwarded vs local"
)

func failForwarding(t *table, err error) {
	t.add(row{Figure: figHALocal, Err: err}, row{Figure: figHAForwarded, Err: err}, row{Figure: figHAAdded, Err: err})
}

// benchForwarding compares a small GET through replica B, which holds the
// member's only agent session, with the same GET through replica A, which
// forwards it to B on their peer tunnel; the direct GET inside the member's
// namespace is the reference for both.
func benchForwarding(ctx context.Context, o *options, agentBin, hubBin, dir string, host *haHost, member *harness.Member, t *table) {
	progress("ha: replicas hub-a and hub-b, agent of %s connected to hub-b only", haMemberName)
	files, err := writeHAFiles(filepath.Join(dir, "pki"), []string{member.Netns.HostIP.String()})
	if err != nil {
		failForwarding(t, err)
		return
	}
	tokens, err := files.writeAgentTokens([]string{haMemberName})
	if err != nil {
		failForwarding(t, err)
		return
	}
	// The gateway admits only clusters the host knows; the member grants
	// the caller's group what the direct admin may do.
	if out, err := host.kubectl(ctx, fmt.Sprintf("apiVersion: backhaul.io/v1alpha1\nkind: Cluster\nmetadata: {name: %s}\n", haMemberName), "apply", "-f", "-"); err != nil {
		failForwarding(t, fmt.Errorf("create Cluster %s: %w: %s", haMemberName, err, out))
		return
	}
	if _, stderr, err := member.Kubectl(ctx, "create", "clusterrolebinding", callerGroup, "--clusterrole=cluster-admin", "--group="+callerGroup); err != nil {
		failForwarding(t, fmt.Errorf("grant %s: %w: %s", callerGroup, err, stderr))
		return
	}
	var a, b *haReplica
	var agent *harness.Process
	defer func() {
		if agent != nil {
			agent.Stop()
		}
		a.stop()
		b.stop()
		for _, n := range []string{"hub-a", "hub-b"} {
			_ = host.withdrawPeer(context.WithoutCancel(ctx), n)
		}
	}()
	if a, err = startReplica(ctx, hubBin, dir, "hub-a", host, files); err != nil {
		failForwarding(t, err)
		return
	}
	if b, err = startReplica(ctx, hubBin, dir, "hub-b", host, files); err != nil {
		failForwarding(t, err)
		return
	}
	// The agent reaches B on the member namespace's HostIP, with one
	// session: A never holds one.
	hubB := &harness.Hub{CA: files.ca, Port: b.port, AgentTokens: map[string]string{haMemberName: tokens[0]}}
	agent, err = harness.StartAgent(ctx, hubB, member, harness.AgentConfig{Binary: agentBin, Cluster: haMemberName, Args: []string{"--hub-connections", "1"}})
	if err != nil {
		failForwarding(t, err)
		return
	}
	gw := newClient(clientConfig{tls: tlsSettings{CAPEM: files.ca.CertPEM}, keepAlive: true})
	defer gw.CloseIdleConnections()
	clusterURL := func(r *haReplica) string { return r.url + "/clusters/" + haMemberName }
	err = harness.WaitFor(ctx, 60*time.Second, 200*time.Millisecond, func() error {
		for _, r := range []*haReplica{b, a} {
			if _, err := get(ctx, gw, clusterURL(r)+"/readyz", bearer(callerToken), make([]byte, 4096)); err != nil {
				return fmt.Errorf("via %s: %w", r.name, err)
			}
		}
		return nil
	})
	if err != nil {
		failForwarding(t, fmt.Errorf("member not reachable through both replicas: %w\nagent log:\n%s", err, agent.Tail(20)))
		return
	}
	// Where the session is decides what "forwarded" means: check it.
	for r, want := range map[*haReplica]float64{a: 0, b: 1} {
		m, err := r.metrics(ctx)
		if err != nil {
			failForwarding(t, err)
			return
		}
		if m[mSessions] != want {
			failForwarding(t, fmt.Errorf("%s holds %v agent sessions, want %v", r.name, m[mSessions], want))
			return
		}
	}
	waited, busy, err := waitQuiet(ctx, quietBusy, o.settleLimit)
	if err != nil {
		failForwarding(t, err)
		return
	}

	meter := cpuMeter{"hub-a": a.pid(), "hub-b": b.pid(), "agent": agent.PID()}
	inNetns := func(r latencyRun) ([]time.Duration, error) { return directInNetns(ctx, member, r) }
	viaHub := func(r latencyRun) ([]time.Duration, error) { return sequential(ctx, gw, r) }
	direct := &kubeStep{what: "direct", base: latencyRun{URL: member.InternalURL + kubePath, Header: bearer(member.AdminToken)}, run: inNetns}
	local := &kubeStep{what: "local (hub-b)", base: latencyRun{URL: clusterURL(b) + kubePath, Header: bearer(callerToken)}, run: viaHub}
	forwarded := &kubeStep{what: "forwarded (hub-a → hub-b)", base: latencyRun{URL: clusterURL(a) + kubePath, Header: bearer(callerToken)}, run: viaHub}

	progress("ha: %d sequential GETs direct (in the namespace), via hub-b (local) and via hub-a (forwarded)", o.kubeRequests)
	// Direct blocks start a process in the namespace, so there are few;
	// local and forwarded, whose difference is the figure, alternate in
	// small blocks so that drift lands on both alike.
	for blk := range kubeBlocks {
		warm := 0
		if blk == 0 {
			warm = 200
		}
		if err := direct.measure(meter, warm, o.kubeRequests/kubeBlocks); err != nil {
			failForwarding(t, err)
			return
		}
		for i := range forwardBlocks {
			for _, st := range []*kubeStep{local, forwarded} {
				w := 0
				if i == 0 {
					w = warm
				}
				if err := st.measure(meter, w, o.kubeRequests/kubeBlocks/forwardBlocks); err != nil {
					failForwarding(t, err)
					return
				}
			}
		}
	}
	profileForwarding(ctx, o, gw, forwarded.base, a, b)
	t.add(latencyRow(figHALocal, direct.lat, local.lat, 0))
	t.add(latencyRow(figHAForwarded, direct.lat, forwarded.lat, 0))
	t.add(latencyRow(figHAAdded, local.lat, forwarded.lat, targetForwardAdded))
	t.note("ha forwarding: waited %s for the machine to settle (CPU %.0f%% busy) before measuring.", waited.Round(100*time.Millisecond), busy*100)
	t.note("ha forwarding: two replicas (--registry=kube, --peer-listen, one CA) and a real agent with --hub-connections 1")
	t.note("  connected to hub-b only; \"forwarded vs local\" puts the local figure in the direct column. Callers are")
	t.note("  authorized by SubjectAccessReview against the host (cached), on the first replica either way.")
	t.note("  CPU per GET, local: hub-b %s, agent %s; forwarded: hub-a %s, hub-b %s, agent %s.",
		fmtDur(local.perRequest("hub-b").cpu), fmtDur(local.perRequest("agent").cpu),
		fmtDur(forwarded.perRequest("hub-a").cpu), fmtDur(forwarded.perRequest("hub-b").cpu), fmtDur(forwarded.perRequest("agent").cpu))
}

// profileForwarding, with -profile, takes CPU profiles of both replicas
// while forwarded GETs run back to back for a while, after the figures.
func profileForwarding(ctx context.Context, o *options, c *http.Client, run latencyRun, a, b *haReplica) {
	if o.profileDir == "" {
		return
	}
	const seconds = 10
	progress("ha: %d s of forwarded GETs under the profiler", seconds)
	done := []<-chan struct{}{
		profileReplica(ctx, o, a, "ha-forward-"+a.name, seconds),
		profileReplica(ctx, o, b, "ha-forward-"+b.name, seconds),
	}
	buf := make([]byte, 32<<10)
	deadline := time.Now().Add(seconds * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if _, err := get(ctx, c, run.URL, run.Header, buf); err != nil {
			progress("ha: forwarded GET under the profiler: %v", err)
			break
		}
	}
	for _, d := range done {
		<-d
	}
}
