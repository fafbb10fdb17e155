package ha

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestHostCutOff cuts the replica doing the singleton work off from the
// host API server (its connections to it reset, new ones refused); it
// keeps its agents and its peer listener, and stays behind the virtual IP
// for as long as its readiness probe (deploy/hub's: every 2 s, 2
// failures) passes. It must lose the Lease and stop the singleton work,
// exactly one other replica must take it over (never two at once), and
// only the cut-off replica may refuse requests — it cannot authenticate
// callers — and then only with 503 and Retry-After (a client retries,
// through the virtual IP, elsewhere) until its probe takes it out. Then
// the link comes back and the replica rejoins.
func TestHostCutOff(t *testing.T) {
	e := requireEnv(t)
	const scenario = "c-cutoff"
	t.Cleanup(func() { assert.NoError(t, e.restoreAll(), "restore the replicas for the next test") })
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	require.NoError(t, e.waitSpread(ctx, 2*time.Minute))
	require.NoError(t, e.waitRoutable(ctx, time.Minute), "every replica serves every member before the traffic starts")

	leaders := e.startLeaderSampler(t)
	leader, err := leaders.waitOneLeader(ctx, time.Minute)
	require.NoError(t, err)
	holder, err := e.leaseHolder(ctx)
	require.NoError(t, err)
	require.Equal(t, leader, holder, "the replica that says it leads holds the Lease")
	victim := e.replica(leader)
	tr := e.startTraffic(t, "c")
	execVIP := e.startStream(t, "exec", "vip", e.vipKubeconfig, true)
	pfVIP := e.startStream(t, "port-forward", "vip", e.vipKubeconfig, true)
	require.NoError(t, tr.waitWatching(ctx))
	require.NoError(t, execVIP.waitReady(ctx))
	require.NoError(t, pfVIP.waitReady(ctx))
	sleep(ctx, 5*time.Second)

	cutAt := time.Now()
	victim.fwd.Cut()
	require.NoError(t, waitUntil(ctx, 2*time.Minute, func() bool {
		_, stopped := leaders.first(cutAt, leaderIsNot(victim.name))
		_, other := leaders.first(cutAt, otherLeads(victim.name))
		return stopped && other
	}), "%s stops leading and another takes over (now %v)\n%s", victim.name, leaders.current(), victim.tail(30))
	stoppedAt, _ := leaders.first(cutAt, leaderIsNot(victim.name))
	takenAt, _ := leaders.first(cutAt, otherLeads(victim.name))
	newLeader := leaders.current()
	// Hold the cut past the auth cache (10 s) and the directory lease
	// (15 s), with traffic running, and check the Lease moved.
	sleep(ctx, time.Until(cutAt.Add(45*time.Second)))
	holderDuring, err := e.leaseHolder(ctx)
	require.NoError(t, err)
	stillLeading := leaders.current()
	// How the replicas see each other now: the cut one cannot renew its
	// directory entry nor read the others'.
	views := map[string]string{}
	for _, r := range e.replicas {
		m, err := r.metrics(ctx)
		if err != nil {
			views[r.name] = err.Error()
			continue
		}
		views[r.name] = fmt.Sprintf("replicas=%v,peers=%v,readyz=%d", m["backhaul_hub_replicas"], m["backhaul_hub_peer_connections"], r.readyz())
	}

	victim.fwd.Restore()
	restoredAt := time.Now()
	require.NoError(t, e.waitServing(ctx, victim))
	rejoinedAt := time.Now()
	sleep(ctx, 5*time.Second)

	missing := tr.stop(ctx)
	failed, _ := tr.reportTraffic(t, scenario, nil)
	overlap, overlapSamples := leaders.overlap(cutAt)
	byReplica := map[string]int{}
	var firstFail, lastFail time.Time
	for _, c := range failed {
		byReplica[orUnknown(c.via)]++
		if firstFail.IsZero() || c.start.Before(firstFail) {
			firstFail = c.start
		}
		if c.end.After(lastFail) {
			lastFail = c.end
		}
	}
	out, outOK := e.endpoints.firstChange(victim, false, cutAt)
	back, backOK := e.endpoints.firstChange(victim, true, restoredAt)
	sinceCut := func(at time.Time, ok bool) any {
		if !ok || at.IsZero() {
			return "never"
		}
		return ms(at.Sub(cutAt))
	}
	haLine(t, scenario, "victim", victim.name, "stopped_leading_after_ms", ms(stoppedAt.Sub(cutAt)),
		"other_leading_after_ms", ms(takenAt.Sub(cutAt)), "two_leading_ms", ms(overlap), "two_leading_samples", overlapSamples,
		"new_leader", newLeader, "lease_holder_during_cut", holderDuring,
		"leaderless_max_ms", ms(leaders.leaderless(cutAt)), "rejoined_after_restore_ms", ms(rejoinedAt.Sub(restoredAt)),
		"failed", len(failed), "failed_by_replica", byReplica,
		"first_failure_after_cut_ms", sinceCut(firstFail, true), "last_failure_after_cut_ms", sinceCut(lastFail, true),
		"probe_took_it_out_after_cut_ms", sinceCut(out, outOK), "restored_after_cut_ms", ms(restoredAt.Sub(cutAt)),
		"probe_put_it_back_after_cut_ms", sinceCut(back, backOK))
	for _, r := range e.replicas {
		haLine(t, scenario, "replica", r.name, "view_at_cut_45s", views[r.name])
	}
	execVIP.report(t, scenario, cutAt)
	pfVIP.report(t, scenario, cutAt)

	assert.NotContains(t, stillLeading, victim.name, "the cut-off replica must not lead")
	assert.NotEqual(t, victim.name, holderDuring, "the Lease moved away from the cut-off replica")
	for _, c := range failed {
		retryable := c.via == victim.name && c.status == 503 && c.retryAfter != ""
		assert.True(t, retryable, "only the cut-off replica may refuse, with 503 and Retry-After: %v", c)
		if outOK && c.start.After(out.Add(time.Second)) {
			t.Errorf("a request failed after %s left the virtual IP: %v", victim.name, c)
		}
	}
	assert.Empty(t, missing, "the watches missed configmaps")
	overlaps := leaders.overlaps()
	assert.Zero(t, len(overlaps), "two replicas did singleton work at once in %d samples (every 100 ms), the first: %v", len(overlaps), head(overlaps, 5))
	if t.Failed() {
		e.logTails(t)
	}
}

func leaderIsNot(name string) func([]string) bool {
	return func(l []string) bool { return !slices.Contains(l, name) }
}

// overlap is how long, from the first to the last sample after since
// with two or more leaders, singleton work ran twice, and in how many
// samples.
func (s *leaderSampler) overlap(since time.Time) (span time.Duration, samples int) {
	var first, last time.Time
	for _, x := range s.all() {
		if x.at.Before(since) || len(x.leaders) < 2 {
			continue
		}
		if first.IsZero() {
			first = x.at
		}
		last = x.at
		samples++
	}
	return last.Sub(first), samples
}

func (e *environment) replica(name string) *replica {
	for _, r := range e.replicas {
		if r.name == name {
			return r
		}
	}
	return nil
}

// leaseHolder is the holder of Lease backhaul-hub.
func (e *environment) leaseHolder(ctx context.Context) (string, error) {
	l, err := e.hostClient.CoordinationV1().Leases(ns).Get(ctx, "backhaul-hub", metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	if l.Spec.HolderIdentity == nil {
		return "", errors.New("lease backhaul-hub has no holder")
	}
	return *l.Spec.HolderIdentity, nil
}
