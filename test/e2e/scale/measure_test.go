//go:build bench

package scale

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"backhaul.io/backhaul/test/harness"
)

// syncsMetric counts the Propagation controller's syncs of one
// Propagation in one member, by result (applied, unchanged, pending,
// failed, deleted).
const syncsMetric = "backhaul_propagation_syncs_total"

// syncResults are the result label's values, in the order reported.
var syncResults = []string{"applied", "unchanged", "pending", "failed", "deleted"}

// phase is one measured stretch of the bench: what the hub process spent
// on it and what its controller did.
type phase struct {
	Name        string        `json:"name"`
	Wall        time.Duration `json:"wallNs"`
	HubCPU      time.Duration `json:"hubCPUNs"`
	HubRSS      int64         `json:"hubRSSBytes"`     // at the end
	HubPhaseRSS int64         `json:"hubMaxRSSBytes"`  // most sampled during the phase
	HubPeakRSS  int64         `json:"hubPeakRSSBytes"` // most since the hub started (VmHWM)
	// Syncs are the phase's increments of syncsMetric by result; nil when
	// the hub does not export it.
	Syncs map[string]float64 `json:"syncs,omitempty"`
	// MemberApplies is how many server-side applies the members' API
	// servers served in the phase (apiserver_request_total{verb="APPLY"},
	// summed): counted where they land, so hubs without the controller's
	// series (older builds) can be compared.
	MemberApplies float64 `json:"memberApplies"`
	// Notes are phase-specific figures (e.g. when the tunnel came back).
	Notes map[string]string `json:"notes,omitempty"`
	// OthersCPU is the CPU time of the other processes of the fleet, by
	// group (agents, members, host): on one machine they compete with
	// the hub, and their share says what bounds the wall time.
	OthersCPU map[string]time.Duration `json:"othersCPUNs"`
	// MachineBusy is the share of all the machine's CPUs busy in the
	// phase, whoever kept them busy; Cores how many there are.
	MachineBusy float64 `json:"machineBusy"`
	Cores       int     `json:"cores"`
}

// Groups of the fleet's other processes, as reported.
var otherGroups = []string{"agents", "members", "host"}

// meter measures phases of the hub process and writes every figure to
// a JSON report as it goes, so a run that fails half way keeps what it
// measured.
type meter struct {
	t          *testing.T
	hub        *harness.Hub
	reportPath string
	// others returns the PIDs of the fleet's other processes now, by
	// group.
	others func() map[string][]int
	// members are the member clusters, whose API servers count applies.
	members []*harness.Member
	report  struct {
		Revision     string   `json:"revision"`
		Uncommitted  []string `json:"uncommitted,omitempty"`
		Date         string   `json:"date"`
		Members      int      `json:"members"`
		Propagations int      `json:"propagations"`
		Changes      int      `json:"changes"`
		Lines        []string `json:"lines"`
		Phases       []phase  `json:"phases"`
	}
}

// measure runs fn and records the hub's CPU time, memory and controller
// syncs over it.
func (m *meter) measure(ctx context.Context, name string, fn func(notes map[string]string)) phase {
	m.t.Helper()
	pid := m.hub.Process().PID()
	u0 := m.usage(pid)
	s0, _ := m.syncs(ctx)
	a0 := m.memberApplies(ctx)
	o0 := m.othersCPU()
	c0, _ := harness.ReadMachineCPU()

	// Sample RSS through the phase: the end of a phase is usually not its
	// peak, and VmHWM is the whole life's.
	sctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stop(); wg.Wait() }() // also when fn fails the test
	var maxRSS int64
	wg.Go(func() {
		for {
			if u, err := harness.ReadProcUsage(pid); err == nil {
				maxRSS = max(maxRSS, u.RSS)
			}
			select {
			case <-sctx.Done():
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
	})
	notes := map[string]string{}
	start := time.Now()
	fn(notes)
	wall := time.Since(start)
	stop()
	wg.Wait()

	u1 := m.usage(pid)
	a1 := m.memberApplies(ctx)
	o1 := m.othersCPU()
	c1, _ := harness.ReadMachineCPU()
	p := phase{Name: name, Wall: wall, HubCPU: u1.CPU - u0.CPU, HubRSS: u1.RSS,
		HubPhaseRSS: max(maxRSS, u1.RSS), HubPeakRSS: u1.PeakRSS, Notes: notes, MemberApplies: a1 - a0,
		OthersCPU: map[string]time.Duration{}, Cores: runtime.NumCPU()}
	for g, byPID := range o1 {
		for pid, cpu := range byPID {
			// A process started during the phase spent all its CPU in
			// it; one that ended during it is not counted.
			p.OthersCPU[g] += cpu - o0[g][pid]
		}
	}
	if c1.Total > c0.Total {
		p.MachineBusy = float64(c1.Busy-c0.Busy) / float64(c1.Total-c0.Total)
	}
	if s1, ok := m.syncs(ctx); ok && s0 != nil {
		p.Syncs = map[string]float64{}
		for k, v := range s1 {
			p.Syncs[k] = v - s0[k]
		}
	}
	return p
}

// memberApplies sums the server-side applies every member's API server
// has served (its own /metrics, read from inside its namespace).
func (m *meter) memberApplies(ctx context.Context) float64 {
	var mu sync.Mutex
	var sum float64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for _, mem := range m.members {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			out, _, err := mem.Kubectl(ctx, "get", "--raw", "/metrics")
			if err != nil {
				return
			}
			var n float64
			for line := range strings.Lines(out) {
				if !strings.HasPrefix(line, "apiserver_request_total{") || !strings.Contains(line, `verb="APPLY"`) {
					continue
				}
				if v, err := strconv.ParseFloat(strings.TrimSpace(line[strings.LastIndexByte(line, ' ')+1:]), 64); err == nil {
					n += v
				}
			}
			mu.Lock()
			sum += n
			mu.Unlock()
		})
	}
	wg.Wait()
	return sum
}

// othersCPU reads the CPU time of the fleet's other processes, by group
// and PID; processes that are gone are left out.
func (m *meter) othersCPU() map[string]map[int]time.Duration {
	out := map[string]map[int]time.Duration{}
	if m.others == nil {
		return out
	}
	for g, pids := range m.others() {
		out[g] = map[int]time.Duration{}
		for _, pid := range pids {
			if u, err := harness.ReadProcUsage(pid); err == nil {
				out[g][pid] = u.CPU
			}
		}
	}
	return out
}

func (m *meter) usage(pid int) harness.ProcUsage {
	m.t.Helper()
	u, err := harness.ReadProcUsage(pid)
	if err != nil {
		m.t.Fatalf("hub usage: %v", err)
	}
	return u
}

// syncs scrapes the hub's /metrics (--metrics-listen) for syncsMetric by
// result; ok is false when the hub does not export it.
func (m *meter) syncs(ctx context.Context) (map[string]float64, bool) {
	m.t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.hub.AdminURL+"/metrics", nil)
	if err != nil {
		m.t.Fatal(err)
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		m.t.Fatalf("scrape hub metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		m.t.Fatalf("scrape hub metrics: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		m.t.Fatalf("parse hub metrics: %v", err)
	}
	fam, ok := families[syncsMetric]
	if !ok {
		return nil, false
	}
	out := map[string]float64{}
	for _, s := range fam.GetMetric() {
		for _, l := range s.GetLabel() {
			if l.GetName() == "result" {
				out[l.GetValue()] += s.GetCounter().GetValue()
			}
		}
	}
	return out, true
}

// line prints a BENCH line on stdout (and in the report).
func (m *meter) line(format string, args ...any) {
	s := "BENCH " + fmt.Sprintf(format, args...)
	fmt.Println(s)
	m.report.Lines = append(m.report.Lines, s)
}

// print reports p: one line of wall time and hub usage, one of the
// controller's syncs.
func (m *meter) print(p phase, extra string) {
	m.line("%-52s wall %7.1fs  hub CPU %6.1fs (%3.0f%% of a core)  hub RSS %s (phase max %s, peak %s)  member applies %s%s",
		p.Name, p.Wall.Seconds(), p.HubCPU.Seconds(), 100*p.HubCPU.Seconds()/p.Wall.Seconds(),
		mib(p.HubRSS), mib(p.HubPhaseRSS), mib(p.HubPeakRSS), thousands(p.MemberApplies), extra)
	m.printSyncs(p, 0)
	m.printOthers(p)
}

// printOthers reports the CPU of the rest of the fleet in p and how busy
// the machine was.
func (m *meter) printOthers(p phase) {
	var b strings.Builder
	for _, g := range otherGroups {
		if cpu, ok := p.OthersCPU[g]; ok {
			fmt.Fprintf(&b, "  %s %.1fs", g, cpu.Seconds())
		}
	}
	m.line("  CPU of the rest:%s; machine %.0f%% busy (%d cores)", b.String(), 100*p.MachineBusy, p.Cores)
}

// printSyncs reports p's syncs, as counts or, over window, per minute.
func (m *meter) printSyncs(p phase, window time.Duration) {
	if p.Syncs == nil {
		m.line("  syncs: metric missing (%s not exported by this hub)", syncsMetric)
		return
	}
	var b strings.Builder
	for _, r := range orderedResults(p.Syncs) {
		if window > 0 {
			fmt.Fprintf(&b, "  %s %s/min", r, thousands(p.Syncs[r]/window.Minutes()))
		} else {
			fmt.Fprintf(&b, "  %s %s", r, thousands(p.Syncs[r]))
		}
	}
	m.line("  syncs:%s", b.String())
}

// orderedResults lists syncResults, then any other result label seen.
func orderedResults(s map[string]float64) []string {
	out := append([]string(nil), syncResults...)
	var extra []string
	for k := range s {
		if !contains(syncResults, k) {
			extra = append(extra, k)
		}
	}
	sort.Strings(extra)
	return append(out, extra...)
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// record adds p to the report and rewrites it.
func (m *meter) record(p phase) {
	m.report.Phases = append(m.report.Phases, p)
	m.write()
}

func (m *meter) write() {
	if m.reportPath == "" {
		return
	}
	b, err := json.MarshalIndent(m.report, "", "  ")
	if err == nil {
		err = os.MkdirAll(filepath.Dir(m.reportPath), 0o755)
	}
	if err == nil {
		err = os.WriteFile(m.reportPath, append(b, '\n'), 0o644)
	}
	if err != nil {
		m.t.Errorf("write report %s: %v", m.reportPath, err)
	}
}

// revision names the commit the hub was built from and the uncommitted
// files it was built with: harness binaries are built from the working
// tree.
func revision(root string) (rev string, dirty []string) {
	out, err := exec.Command("git", "-C", root, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown", nil
	}
	rev = strings.TrimSpace(string(out))
	out, err = exec.Command("git", "-C", root, "status", "--porcelain", "--", "hub", "pkg", "tunnel", "go.mod", "go.sum").Output()
	if err != nil {
		return rev, nil
	}
	for _, l := range strings.Split(string(out), "\n") {
		if len(l) > 3 { // "XY path"
			dirty = append(dirty, l[3:])
		}
	}
	return rev, dirty
}

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

// thousands formats v rounded to a whole number with thousands separators.
func thousands(v float64) string {
	neg := v < 0
	s := strconv.FormatInt(int64(v+0.5*sign(v)), 10)
	if neg {
		s = s[1:]
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	if neg {
		s = "-" + s
	}
	return s
}

func sign(v float64) float64 {
	if v < 0 {
		return -1
	}
	return 1
}
