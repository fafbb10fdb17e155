package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"time"
)

// benchHA measures the active-active hub (docs/ha.md): replicas of
// backhaul-hub with --registry=kube and --peer-listen, sharing a host
// cluster. First a GET forwarded from one replica to the one holding the
// cluster's agent session, against the same GET served locally; then a
// reconnect storm of simulated agents on three replicas and the kill -9 of
// one of them.
func benchHA(ctx context.Context, o *options, hubBin, agentBin, dir string, t *table) {
	if os.Geteuid() != 0 {
		failHA(t, o, errors.New("needs root for network namespaces (or pass -skip-ha)"))
		return
	}
	// The machine is shared: say how busy it was when the section began.
	t.note("ha: load average at the start of the section: %s (1, 5, 15 min).", loadAverage())
	dir = filepath.Join(dir, "ha")
	if o.haSkipForward {
		progress("ha: starting the host cluster")
	} else {
		progress("ha: starting the host cluster and member %s", haMemberName)
	}
	hostM, member, err := startHAMembers(ctx, dir, !o.haSkipForward)
	defer func() {
		if member != nil {
			_ = member.Stop()
		}
		if hostM != nil {
			_ = hostM.Stop()
		}
	}()
	if err == nil && hostM != nil {
		t.note("ha: host apiserver ready in %s.", hostM.StartupTime.Round(100*time.Millisecond))
	}
	var host *haHost
	if err == nil {
		host, err = newHAHost(ctx, hostM, dir)
	}
	if err != nil {
		failHA(t, o, err)
		return
	}
	if !o.haSkipForward {
		benchForwarding(ctx, o, agentBin, hubBin, dir, host, member, t)
		// The storm needs neither the member nor its apiserver's CPU.
		_ = member.Stop()
		member = nil
	}
	if !o.haSkipStorm && ctx.Err() == nil {
		benchStorm(ctx, o, hubBin, dir, host, t)
	}
	t.note("ha: load average at the end of the section: %s.", loadAverage())
}

// failHA marks every figure of the section's parts that run as not
// measured.
func failHA(t *table, o *options, err error) {
	if !o.haSkipForward {
		failForwarding(t, err)
	}
	if !o.haSkipStorm {
		failStorm(t, o.haAgents, err)
	}
}
