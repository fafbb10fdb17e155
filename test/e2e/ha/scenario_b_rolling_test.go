package ha

import (
	"context"
	"fmt"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRollingRestart restarts the three replicas one after the other, as
// a Deployment rollout does: out of the virtual IP (the Pod is
// terminating), SIGTERM, the replica drains (not ready, its agents move,
// it keeps forwarding, then ends its watches between events) and exits
// by itself with status 0; it starts again on the same ports, gets its
// EndpointSlice, is ready with its peers, and goes back behind the
// virtual IP. No list or create may fail, and no watch may end with an
// error a client would see: each one the replica carried ends cleanly
// and the client watches again through another. What happens to an exec
// placed on the draining replica is reported.
func TestRollingRestart(t *testing.T) {
	e := requireEnv(t)
	const scenario = "b-rolling"
	t.Cleanup(func() { assert.NoError(t, e.restoreAll(), "restore the replicas for the next test") })
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	require.NoError(t, e.waitSpread(ctx, 2*time.Minute))
	require.NoError(t, e.waitRoutable(ctx, time.Minute), "every replica serves every member before the traffic starts")

	leaders := e.startLeaderSampler(t)
	_, err := leaders.waitOneLeader(ctx, time.Minute)
	require.NoError(t, err)
	tr := e.startTraffic(t, "b")
	execVIP := e.startStream(t, "exec", "vip", e.vipKubeconfig, true)
	pfVIP := e.startStream(t, "port-forward", "vip", e.vipKubeconfig, true)
	require.NoError(t, tr.waitWatching(ctx))
	require.NoError(t, execVIP.waitReady(ctx))
	require.NoError(t, pfVIP.waitReady(ctx))
	sleep(ctx, 5*time.Second)
	began := time.Now()

	for _, r := range e.replicas {
		// An exec straight to the replica about to drain.
		pinned := e.startStream(t, "exec", r.name, e.replicaKubeconfigs[r.name], false)
		require.NoError(t, pinned.waitReady(ctx), "exec pinned to %s", r.name)
		placement, err := e.placement(ctx)
		require.NoError(t, err)

		require.NoError(t, e.endpoints.admit(r, false, "terminating"))
		require.NoError(t, e.publishEndpoints(ctx, r, true))
		termAt := time.Now()
		watch := e.watchDrain(ctx, r)
		took, err := r.terminate(2 * time.Minute)
		require.NoError(t, err, "%s must exit by itself with status 0 after SIGTERM\n%s", r.name, r.tail(40))
		d := <-watch
		require.NoError(t, e.withdrawEndpoints(ctx, r))

		require.NoError(t, r.start(ctx))
		require.NoError(t, e.publishEndpoints(ctx, r, false))
		require.NoError(t, e.waitServing(ctx, r))
		require.NoError(t, e.endpoints.admit(r, true, "ready with its peers"))
		servingAt := time.Now()
		require.NoError(t, e.waitSpread(ctx, 2*time.Minute))
		spreadAt := time.Now()

		pinned.stop()
		pf := pinned.figures()
		pinnedEnd, pinnedErr := "still running at exit", ""
		if len(pf.ends) > 0 {
			pinnedEnd = fmt.Sprintf("%dms", ms(pf.ends[0].at.Sub(termAt)))
			pinnedErr = pf.ends[0].err + "; " + pf.ends[0].stderr
		}
		haLine(t, scenario, "replica", r.name, "held_before", holdings(placement, r.name),
			"exit_after_term_ms", ms(took), "not_ready_seen", d.notReady, "draining_gauge_seen", d.draining,
			"upgrade_refused_503_retry_after", d.upgradeRefused,
			"back_serving_after_term_ms", ms(servingAt.Sub(termAt)), "agents_respread_after_term_ms", ms(spreadAt.Sub(termAt)),
			"pinned_exec_end_after_term", pinnedEnd, "pinned_exec_last_ok_after_term_ms", ms(pf.lastOK.Sub(termAt)))
		if pinnedErr != "" {
			t.Logf("exec pinned to draining %s ended: %s", r.name, pinnedErr)
		}
		// The gateway ends an exec it can no longer carry with a Status on
		// the error channel and a close frame: kubectl prints why, never
		// "close 1006 (abnormal closure)".
		if assert.NotEmpty(t, pf.ends, "the exec pinned to %s must end when it exits", r.name) {
			assert.Contains(t, pinnedErr, "run the command again", "exec pinned to %s ends with the hub's reason", r.name)
			assert.NotContains(t, pinnedErr, "1006", "exec pinned to %s ends with a close frame", r.name)
		}
		assert.True(t, d.notReady, "%s /readyz must answer 503 while it drains", r.name)
		assert.True(t, d.draining, "%s backhaul_hub_draining must be 1 while it drains", r.name)
		assert.True(t, d.upgradeRefused, "%s must answer agent upgrades 503 with Retry-After while it drains", r.name)
	}

	missing := tr.stop(ctx)
	failed, _ := tr.reportTraffic(t, scenario, nil)
	haLine(t, scenario, "rollout_ms", ms(time.Since(began)), "failed", len(failed))
	execVIP.report(t, scenario, began)
	pfVIP.report(t, scenario, began)

	assert.Zero(t, len(failed), "requests through the virtual IP failed during the rollout; the first: %v", head(failed, 5))
	assert.Empty(t, tr.watchErrors(), "watches ended with an error a client would see")
	assert.Empty(t, missing, "the watches missed configmaps")
	overlaps := leaders.overlaps()
	assert.Zero(t, len(overlaps), "two replicas did singleton work at once in %d samples (every 100 ms), the first: %v", len(overlaps), head(overlaps, 5))
	if t.Failed() {
		e.logTails(t)
	}
}

func holdings(placement map[string][]string, replica string) []string {
	var out []string
	for _, c := range memberNames {
		for _, r := range placement[c] {
			if r == replica {
				out = append(out, c)
			}
		}
	}
	return out
}

// drainSeen is what a draining replica showed: /readyz 503, the
// draining gauge 1, and an agent upgrade (/v1/tunnel) refused with 503
// and Retry-After.
type drainSeen struct{ notReady, draining, upgradeRefused bool }

// watchDrain polls r every 50 ms until the process exits.
func (e *environment) watchDrain(ctx context.Context, r *replica) <-chan drainSeen {
	out := make(chan drainSeen, 1)
	p := r.process()
	direct := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: e.hubTLS(), DisableKeepAlives: true}}
	go func() {
		var d drainSeen
		for {
			if r.readyz() == http.StatusServiceUnavailable {
				d.notReady = true
			}
			if v, err := r.gauge(ctx, "backhaul_hub_draining"); err == nil && v == 1 {
				d.draining = true
			}
			if !d.upgradeRefused && d.draining {
				if resp, err := direct.Get(fmt.Sprintf("https://127.0.0.1:%d/v1/tunnel", r.port)); err == nil {
					resp.Body.Close()
					d.upgradeRefused = resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != ""
				}
			}
			select {
			case <-p.Exited():
				out <- d
				return
			case <-ctx.Done():
				out <- d
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return out
}

// terminate sends SIGTERM, as the kubelet does, and waits up to timeout
// for the process to exit by itself (no SIGKILL: a replica that does not
// exit is a failure). It returns how long the exit took and the process's
// result (nil for status 0).
func (r *replica) terminate(timeout time.Duration) (time.Duration, error) {
	p := r.process()
	if p == nil {
		return 0, fmt.Errorf("%s was never started", r.name)
	}
	start := time.Now()
	if err := syscall.Kill(p.PID(), syscall.SIGTERM); err != nil {
		return 0, fmt.Errorf("SIGTERM %s: %w", r.name, err)
	}
	select {
	case <-p.Exited():
		return time.Since(start), p.Err()
	case <-time.After(timeout):
		return time.Since(start), fmt.Errorf("%s still running %v after SIGTERM\n%s", r.name, timeout, p.Tail(40))
	}
}

// watchErrors is every watch error of the scenario, by cluster.
func (tr *traffic) watchErrors() map[string][]string {
	out := map[string][]string{}
	for c, w := range tr.watchers {
		if errs := w.figures().errs; len(errs) > 0 {
			out[c] = errs
		}
	}
	return out
}
