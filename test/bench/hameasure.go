package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"time"

	"backhaul.io/backhaul/test/harness"
)

// registration is how a wait for every agent's session went.
type registration struct {
	done  bool
	all   time.Duration   // until the replicas counted every agent
	marks []time.Duration // 50, 90, 99 %
	most  float64         // the most sessions the scrapes counted
	// mostHeld is the most sessions the replicas held at once after
	// start, per their logs (scrapes fail when they are busiest).
	mostHeld int
	// agents is when every simulated agent had its session up, as the
	// agents saw it, and logs when the replicas' registries held n
	// sessions, from their timestamped "agent connected" and "agent
	// disconnected" lines (0: not seen). Both cross-check the scrapes,
	// whose answers are late when the replicas, or this process, are
	// busiest.
	agents time.Duration
	logs   time.Duration
	slow   time.Duration // the slowest /metrics answer during the wait
	n      int
	limit  time.Duration
}

func (r registration) String() string {
	if !r.done {
		return fmt.Sprintf("not within %s (at most %d held)", r.limit, max(r.mostHeld, int(r.most)))
	}
	return fmt.Sprintf("%.1f s", r.all.Seconds())
}

func (r registration) milestones() string {
	var parts []string
	for _, m := range r.marks {
		parts = append(parts, fmt.Sprintf("%.1f", m.Seconds()))
	}
	for len(parts) < 3 {
		parts = append(parts, "-")
	}
	if r.done {
		parts = append(parts, fmt.Sprintf("%.1f s", r.all.Seconds()))
	} else {
		parts = append(parts, "not within "+r.limit.String())
	}
	seen := func(d time.Duration) string {
		if d <= 0 {
			return "not seen"
		}
		return fmt.Sprintf("%.1f s", d.Seconds())
	}
	return fmt.Sprintf("%s; per the replicas' logs all at %s, per the agents %s (slowest /metrics answer %s)",
		strings.Join(parts, " / "), seen(r.logs), seen(r.agents), r.slow.Round(10*time.Millisecond))
}

// waitRegistered polls the sum of backhaul_hub_sessions over rs until it
// reaches n or limit passes, timing from start. A replica too busy to
// answer in time keeps its last count; one that exited fails the wait.
func waitRegistered(ctx context.Context, rs []*haReplica, f *simFleet, n int, start time.Time, limit time.Duration) (registration, error) {
	reg := registration{n: n, limit: limit}
	fracs := []float64{0.5, 0.9, 0.99}
	last := make([]float64, len(rs))
	lastReport := time.Now()
	for {
		var wg sync.WaitGroup
		errs := make([]error, len(rs))
		took := make([]time.Duration, len(rs))
		for i, r := range rs {
			wg.Go(func() {
				t := time.Now()
				m, err := r.metrics(ctx)
				took[i] = time.Since(t)
				if err == nil {
					last[i] = m[mSessions]
				}
				errs[i] = err
			})
		}
		wg.Wait()
		for i, r := range rs {
			reg.slow = max(reg.slow, took[i])
			select {
			case <-r.proc.Exited():
				return reg, fmt.Errorf("%s exited: %v (scrape: %v)", r.name, r.proc.Err(), errs[i])
			default:
			}
		}
		total := 0.0
		for _, v := range last {
			total += v
		}
		since := time.Since(start)
		reg.most = max(reg.most, total)
		for len(reg.marks) < len(fracs) && total >= fracs[len(reg.marks)]*float64(n) {
			reg.marks = append(reg.marks, since)
		}
		if int(total) >= n {
			reg.done, reg.all = true, since
			reg.finish(rs, f, n, start)
			return reg, nil
		}
		if since > limit {
			reg.finish(rs, f, n, start)
			return reg, nil
		}
		if time.Since(lastReport) > 5*time.Second {
			progress("ha: %.0f of %d registered after %s (agents see %d up)", total, n, since.Round(time.Second), f.connected.Load())
			lastReport = time.Now()
		}
		select {
		case <-ctx.Done():
			return reg, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// finish fills in the cross-checks once the wait is over.
func (r *registration) finish(rs []*haReplica, f *simFleet, n int, start time.Time) {
	if d, ok := f.allUpSince(start); ok {
		r.agents = d
	}
	d, most, ok := registeredFromLogs(rs, start, n)
	if ok {
		r.logs = d
	}
	r.mostHeld = most
}

// registeredFromLogs replays the replicas' registry lines (every
// "agent connected" and "agent disconnected", stamped by the hub) and
// returns when, at or after start, the replicas together first held n
// sessions, and the most they held at once after start.
func registeredFromLogs(rs []*haReplica, start time.Time, n int) (time.Duration, int, bool) {
	type event struct {
		at    time.Time
		delta int
	}
	var events []event
	for _, r := range rs {
		b, err := os.ReadFile(r.proc.LogPath())
		if err != nil {
			return 0, 0, false
		}
		for _, line := range strings.Split(string(b), "\n") {
			delta := 0
			switch {
			case strings.Contains(line, "registry: agent connected:"):
				delta = 1
			case strings.Contains(line, "registry: agent disconnected:"):
				delta = -1
			default:
				continue
			}
			ts, _, _ := strings.Cut(line, " ")
			at, err := time.Parse(time.RFC3339Nano, ts)
			if err != nil {
				continue
			}
			events = append(events, event{at, delta})
		}
	}
	slices.SortStableFunc(events, func(a, b event) int { return a.at.Compare(b.at) })
	held, most := 0, 0
	for _, e := range events {
		held += e.delta
		if e.at.Before(start) {
			continue
		}
		most = max(most, held)
		if held >= n {
			return e.at.Sub(start), most, true
		}
	}
	return 0, most, false
}

// waitReplicaCount says when every replica in rs first counted exactly
// len(rs) replicas serving, from start.
func waitReplicaCount(ctx context.Context, rs []*haReplica, start time.Time, limit time.Duration) string {
	err := harness.WaitFor(ctx, limit, 250*time.Millisecond, func() error {
		for _, r := range rs {
			m, err := r.metrics(ctx)
			if err != nil {
				return err
			}
			if int(m[mReplicas]) != len(rs) {
				return fmt.Errorf("%s counts %v", r.name, m[mReplicas])
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Sprintf("not within %s", time.Since(start).Round(time.Second))
	}
	return fmt.Sprintf("%.1f s", time.Since(start).Seconds())
}

// steady is the replicas at rest after registration: memory, and CPU over
// an idle window.
type steady struct {
	after     map[string]replicaSample
	window    time.Duration
	cpu       map[string]time.Duration // CPU in the window
	names     []string
	directory directoryCost // what the host's apiserver saw of the directory in the window
}

// steadyState lets the replicas finish what registration started (probes,
// directory writes), then measures an idle window.
func steadyState(ctx context.Context, o *options, host *haHost, rs []*haReplica, profile string) (steady, error) {
	settle, window := 20*time.Second, 10*time.Second
	if o.quick {
		settle, window = 5*time.Second, 5*time.Second
	}
	progress("ha: %s for the replicas to settle, then %s idle", settle, window)
	select {
	case <-time.After(settle):
	case <-ctx.Done():
		return steady{}, ctx.Err()
	}
	s := steady{window: window, cpu: map[string]time.Duration{}}
	b, err := sampleReplicas(ctx, rs)
	if err != nil {
		return s, err
	}
	dir0, dirErr := hostDirectoryCost(ctx, host)
	done := profileReplica(ctx, o, rs[0], profile+"-"+rs[0].name, int(window/time.Second))
	select {
	case <-time.After(window):
	case <-ctx.Done():
		return s, ctx.Err()
	}
	<-done
	if s.after, err = sampleReplicas(ctx, rs); err != nil {
		return s, err
	}
	if dir1, err := hostDirectoryCost(ctx, host); err == nil && dirErr == nil {
		s.directory = dir1.sub(dir0)
	}
	for _, r := range rs {
		s.names = append(s.names, r.name)
		s.cpu[r.name] = s.after[r.name].cpu - b[r.name].cpu
	}
	if o.profileDir != "" {
		if p, err := rs[0].saveProfile(ctx, o.profileDir, profile+"-"+rs[0].name+"-heap", "heap"); err == nil {
			addProfile(o, p)
		}
	}
	return s, nil
}

// rssPerSession is the replicas' RSS growth since idle over their sessions.
func (s steady) rssPerSession(idle map[string]replicaSample) float64 {
	var grown, sessions float64
	for _, n := range s.names {
		grown += s.after[n].rss - idle[n].rss
		sessions += s.after[n].sessions
	}
	if sessions == 0 {
		return 0
	}
	return grown / sessions
}

// cpuPer1000 is the replicas' CPU per second of the idle window, per 1000
// sessions held.
func (s steady) cpuPer1000() time.Duration {
	var cpu time.Duration
	var sessions float64
	for _, n := range s.names {
		cpu += s.cpu[n]
		sessions += s.after[n].sessions
	}
	if sessions == 0 {
		return 0
	}
	return time.Duration(float64(cpu) / s.window.Seconds() / (sessions / 1000))
}

func (s steady) describe(idle map[string]replicaSample) string {
	var parts []string
	for _, n := range s.names {
		a, i := s.after[n], idle[n]
		per := 0.0
		if a.sessions > 0 {
			per = (a.rss - i.rss) / a.sessions
		}
		parts = append(parts, fmt.Sprintf("%s %.0f sessions, RSS %.0f → %.0f MiB (%s/session), %.0f goroutines, heap %.0f MiB, stacks %.0f MiB, CPU %.0f ms/s",
			n, a.sessions, i.rss/(1<<20), a.rss/(1<<20), fmtKiB(per), a.gor, a.heap/(1<<20), a.stack/(1<<20), float64(s.cpu[n]/time.Millisecond)/s.window.Seconds()))
	}
	return strings.Join(parts, "; ")
}

// profilesMu guards o.profiles against the profile goroutines of the HA
// section, two of which may finish at once.
var profilesMu sync.Mutex

func addProfile(o *options, path string) {
	profilesMu.Lock()
	defer profilesMu.Unlock()
	o.profiles = append(o.profiles, path)
}

// profileReplica takes a CPU profile of r for seconds in the background
// when -profile is set; the channel closes when it is written.
func profileReplica(ctx context.Context, o *options, r *haReplica, name string, seconds int) <-chan struct{} {
	done := make(chan struct{})
	if o.profileDir == "" {
		close(done)
		return done
	}
	go func() {
		defer close(done)
		p, err := r.saveProfile(ctx, o.profileDir, name+"-cpu", fmt.Sprintf("profile?seconds=%d", seconds))
		if err != nil {
			progress("no CPU profile of %s: %v", r.name, err)
			return
		}
		addProfile(o, p)
	}()
	return done
}

// procMeter is the CPU of named processes: the replicas, this process (the
// simulated agents) and the host's apiserver and etcd.
type procMeter struct {
	names []string
	pids  map[string]int
}

func replicaMeter(rs []*haReplica, others map[string]int) procMeter {
	m := procMeter{pids: map[string]int{}}
	for _, r := range rs {
		m.names = append(m.names, r.name)
		m.pids[r.name] = r.pid()
	}
	m.names = append(m.names, "agents (bench)")
	m.pids["agents (bench)"] = os.Getpid()
	for _, n := range []string{"host apiserver", "host etcd"} {
		if pid, ok := others[n]; ok {
			m.names = append(m.names, n)
			m.pids[n] = pid
		}
	}
	return m
}

func (m procMeter) sample() map[string]time.Duration {
	out := map[string]time.Duration{}
	for n, pid := range m.pids {
		out[n] = procUsage(pid).cpu
	}
	return out
}

func (m procMeter) describe(a, b map[string]time.Duration) string {
	var parts []string
	for _, n := range m.names {
		parts = append(parts, fmt.Sprintf("%s %.1f", n, (b[n]-a[n]).Seconds()))
	}
	return strings.Join(parts, ", ")
}

// hostProcesses finds the host cluster's apiserver and etcd.
func hostProcesses(h *haHost) map[string]int {
	out := map[string]int{}
	if procs, err := netnsProcesses(h.member.Netns.Name); err == nil {
		if pid, ok := procs["kube-apiserver"]; ok {
			out["host apiserver"] = pid
		}
		if pid, ok := procs["etcd"]; ok {
			out["host etcd"] = pid
		}
	}
	return out
}

// profileSelf takes a CPU profile of this process (the simulated agents)
// when -profile is set, until the returned function is called.
func profileSelf(o *options, name string) (stop func()) {
	if o.profileDir == "" {
		return func() {}
	}
	path := filepath.Join(o.profileDir, name+"-cpu.pprof")
	f, err := os.Create(path)
	if err != nil {
		progress("no CPU profile: %v", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		progress("no CPU profile: %v", err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
		addProfile(o, path)
	}
}
