package ha

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestKillReplica: kill -9 the replica that holds the most agent sessions,
// then take it out of the virtual IP and the peer EndpointSlices, as
// kube-proxy and the endpoint controller would once the Pod is gone.
// Agents keep a second session on another replica, so no request for
// their clusters may fail: only a request that was in flight inside the
// killed process, or that the virtual IP still sent to it in the moment
// before the map changed, is lost with it (reported, not excused
// silently). Watches carried by it break; they must resume and miss
// nothing. The Lease, if it held it, passes to another replica, never
// with two leading at once.
func TestKillReplica(t *testing.T) {
	e := requireEnv(t)
	const scenario = "a-kill"
	t.Cleanup(func() { assert.NoError(t, e.restoreAll(), "restore the replicas for the next test") })
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	require.NoError(t, e.waitSpread(ctx, 2*time.Minute))
	require.NoError(t, e.waitRoutable(ctx, time.Minute), "every replica serves every member before the traffic starts")

	leaders := e.startLeaderSampler(t)
	leaderBefore, err := leaders.waitOneLeader(ctx, time.Minute)
	require.NoError(t, err)
	tr := e.startTraffic(t, "a")
	execVIP := e.startStream(t, "exec", "vip", e.vipKubeconfig, true)
	pfVIP := e.startStream(t, "port-forward", "vip", e.vipKubeconfig, true)
	require.NoError(t, tr.waitWatching(ctx))
	require.NoError(t, execVIP.waitReady(ctx))
	require.NoError(t, pfVIP.waitReady(ctx))
	sleep(ctx, 5*time.Second) // a baseline with everything up

	placement, err := e.placement(ctx)
	require.NoError(t, err)
	victim := e.busiest(placement)
	var held []string
	for c, rs := range placement {
		if slices.Contains(rs, victim.name) {
			held = append(held, c)
		}
	}
	slices.Sort(held)
	t.Logf("placement before the kill: %v; killing %s (holds %v; leader %s)", placement, victim.name, held, leaderBefore)

	killAt := time.Now()
	victim.kill()
	killed := time.Now()
	require.NoError(t, e.endpoints.admit(victim, false, "killed"))
	removedAt := time.Now()
	require.NoError(t, e.withdrawEndpoints(ctx, victim))

	// The agents that lost a session get another on a survivor.
	require.NoError(t, e.waitSpread(ctx, 2*time.Minute))
	respreadAt := time.Now()
	var failoverAt time.Time
	if leaderBefore == victim.name {
		require.NoError(t, waitUntil(ctx, 2*time.Minute, func() bool {
			_, ok := leaders.first(killAt, otherLeads(victim.name))
			return ok
		}), "another replica takes the Lease")
		failoverAt, _ = leaders.first(killAt, otherLeads(victim.name))
	}
	// The survivors drop it from the directory when its entry's lease
	// (15 s) runs out; traffic keeps running past that.
	survivors := e.runningReplicas()
	require.NoError(t, waitUntil(ctx, time.Minute, func() bool {
		for _, r := range survivors {
			if v, err := r.gauge(ctx, "backhaul_hub_replicas"); err != nil || int(v) != len(survivors) {
				return false
			}
		}
		return true
	}), "the survivors forget %s", victim.name)
	forgotAt := time.Now()
	sleep(ctx, time.Until(killAt.Add(25*time.Second)))

	missing := tr.stop(ctx)
	// Lost with the killed process: a request in flight in it at the kill,
	// or one the virtual IP sent to it before the map changed — refused,
	// or accepted by its listening socket in the milliseconds SIGKILL takes
	// and then reset.
	lost := func(c call) bool {
		inFlight := c.start.Before(killAt) && !c.end.Before(killAt)
		toVictim := c.refused || (c.via == victim.name && c.status == 0)
		staleVIP := toVictim && c.start.Before(removedAt)
		return inFlight || staleVIP
	}
	failed, excused := tr.reportTraffic(t, scenario, lost)
	haLine(t, scenario, "victim", victim.name, "victim_held", held, "victim_was_leader", leaderBefore == victim.name,
		"kill_ms", ms(killed.Sub(killAt)), "vip_removed_after_ms", ms(removedAt.Sub(killAt)),
		"agents_respread_after_ms", ms(respreadAt.Sub(killAt)), "directory_forgot_after_ms", ms(forgotAt.Sub(killAt)),
		"lost_with_victim", len(excused), "failed", len(failed))
	if !failoverAt.IsZero() {
		haLine(t, scenario, "lease_failover_after_ms", ms(failoverAt.Sub(killAt)), "leaderless_max_ms", ms(leaders.leaderless(killAt)))
	}
	execVIP.report(t, scenario, killAt)
	pfVIP.report(t, scenario, killAt)

	assert.Zero(t, len(failed), "requests through the virtual IP failed after %s was killed; the first: %v", victim.name, head(failed, 5))
	assert.Empty(t, missing, "the watches missed configmaps")
	overlaps := leaders.overlaps()
	assert.Zero(t, len(overlaps), "two replicas did singleton work at once in %d samples (every 100 ms), the first: %v", len(overlaps), head(overlaps, 5))
	if t.Failed() {
		e.logTails(t)
	}
}

// busiest is the running replica holding the most clusters (the first by
// name on a tie).
func (e *environment) busiest(placement map[string][]string) *replica {
	var best *replica
	n := -1
	for _, r := range e.runningReplicas() {
		k := 0
		for _, rs := range placement {
			if slices.Contains(rs, r.name) {
				k++
			}
		}
		if k > n {
			best, n = r, k
		}
	}
	return best
}

func waitUntil(ctx context.Context, timeout time.Duration, ok func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for !ok() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

// logTails logs the end of every replica's and agent's log.
func (e *environment) logTails(t *testing.T) {
	t.Helper()
	for _, r := range e.replicas {
		t.Log(r.tail(40))
	}
	for _, c := range memberNames {
		t.Logf("--- agent-%s ---\n%s", c, e.agent(c).Tail(30))
	}
}
