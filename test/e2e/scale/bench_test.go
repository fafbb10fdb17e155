//go:build bench

package scale

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"backhaul.io/backhaul/test/harness"
)

var (
	membersFlag = flag.Int("scale.members", 20, "member clusters")
	propsFlag   = flag.Int("scale.propagations", 1000, "Propagations, each placed on every member")
	changesFlag = flag.Int("scale.changes", 500, "Propagations changed while one member is offline")
	steadyFlag  = flag.Duration("scale.steady", envDuration("BACKHAUL_BENCH_STEADY", 2*time.Minute),
		"steady-state window over which the hub's apply rate and idle CPU are measured (also BACKHAUL_BENCH_STEADY)")
	reportFlag = flag.String("scale.report", "", "JSON file for the figures (default _output/bench/propagation-scale.json)")
)

func envDuration(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(name)); err == nil && d > 0 {
		return d
	}
	return def
}

const (
	// propNamespace holds the Propagations in the host and their copies
	// in the members.
	propNamespace = "default"
	// benchLabel marks the bench's Propagations; setLabel says whether one
	// is among those changed while a member is offline.
	benchLabel = "bench.backhaul.io/scale"
	setLabel   = "bench.backhaul.io/set"
	// bound is how long any phase may take before the bench gives up: not
	// a figure, only a way to end a stuck run.
	bound = 20 * time.Minute
	// clientWorkers create, change and delete Propagations at once.
	clientWorkers = 16
)

// TestPropagationScale (build tag bench, run by `make bench`):
//
//	a. N Propagations x M members converge (readyClusters == M at the
//	   current generation), from their creation;
//	b. steady state: the hub's applies per minute and idle CPU over a
//	   window (-scale.steady, BACKHAUL_BENCH_STEADY);
//	c. one member's agent stops, C Propagations change and reach the
//	   other M-1; the agent returns and the member catches up;
//	d. every Propagation is deleted, with its copies.
//
// Each with the hub's CPU seconds and RSS. Flags (after -args):
// -scale.members, -scale.propagations, -scale.changes, -scale.steady,
// -scale.report.
func TestPropagationScale(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("the scale bench needs root, for network namespaces")
	}
	nm, np, nc := *membersFlag, *propsFlag, *changesFlag
	if nm < 2 || nm > maxMembers || np < 1 || nc < 1 || nc > np || *steadyFlag <= 0 {
		t.Fatalf("want 2..%d members, at least one Propagation, 1..propagations changes and a positive window; got %d, %d, %d, %v",
			maxMembers, nm, np, nc, *steadyFlag)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Hour)
	defer cancel()

	setupStart := time.Now()
	f := startFleet(ctx, t, nm)
	m := &meter{t: t, hub: f.hub, reportPath: *reportFlag, others: f.pids, members: f.members}
	if m.reportPath == "" {
		m.reportPath = filepath.Join(f.root, "_output", "bench", "propagation-scale.json")
	}
	m.report.Revision, m.report.Uncommitted = revision(f.root)
	m.report.Date = time.Now().UTC().Format(time.RFC3339)
	m.report.Members, m.report.Propagations, m.report.Changes = nm, np, nc
	built := "built from " + m.report.Revision
	if n := len(m.report.Uncommitted); n > 0 {
		built += fmt.Sprintf(" + %d uncommitted files", n)
		t.Logf("hub built with uncommitted changes to: %s", strings.Join(m.report.Uncommitted, " "))
	}
	if bin := os.Getenv("BACKHAUL_BENCH_HUB"); bin != "" {
		built = "the binary " + bin + " (BACKHAUL_BENCH_HUB), agents " + built
	}
	m.line("propagation at scale: hub %s; %d members (API servers on one etcd, agents through real tunnels), %s Propagations; set up in %v",
		built, nm, thousands(float64(np)), time.Since(setupStart).Round(time.Second))
	if _, ok := m.syncs(ctx); !ok {
		m.line("  metric missing: this hub does not export %s; apply rates are not reported", syncsMetric)
	}

	props := f.dyn.Resource(propagationsGVR).Namespace(propNamespace)
	b := &bench{t: t, f: f, props: props, n: np, members: nm}

	// a. Converge from creation.
	p := m.measure(ctx, fmt.Sprintf("%s Propagations x %d members converge", thousands(float64(np)), nm), func(notes map[string]string) {
		start := time.Now()
		b.create(ctx, nc)
		notes["created"] = time.Since(start).Round(time.Millisecond).String()
		b.waitConverged(ctx, benchLabel, int64(nm), np)
	})
	m.print(p, fmt.Sprintf("  (created in %s)", p.Notes["created"]))
	m.record(p)
	first, last := f.members[0], f.members[nm-1]
	b.checkCopies(ctx, first, np, "1")

	// b. Steady state: nothing changes; what does the hub do?
	window := *steadyFlag
	p = m.measure(ctx, fmt.Sprintf("steady state, %v window", window), func(map[string]string) {
		select {
		case <-ctx.Done():
		case <-time.After(window):
		}
	})
	applied := "metric missing"
	if p.Syncs != nil {
		applied = thousands(p.Syncs["applied"]/p.Wall.Minutes()) + "/min"
	}
	m.line("%-52s applies %s (members served %s/min)  hub CPU %6.1fs (%4.1f%% of a core)  hub RSS %s (phase max %s)",
		p.Name, applied, thousands(p.MemberApplies/p.Wall.Minutes()), p.HubCPU.Seconds(), 100*p.HubCPU.Seconds()/p.Wall.Seconds(), mib(p.HubRSS), mib(p.HubPhaseRSS))
	m.printSyncs(p, p.Wall)
	m.printOthers(p)
	m.record(p)

	// c. One member misses nc changes, then catches up.
	f.agent(last.Name).Stop()
	p = m.measure(ctx, fmt.Sprintf("%s changes reach %d members, %s offline", thousands(float64(nc)), nm-1, last.Name), func(map[string]string) {
		b.change(ctx, nc, "2")
		b.waitConverged(ctx, setLabel+"=change", int64(nm-1), nc)
	})
	m.print(p, "")
	m.record(p)
	// The hub's status says the member is gone before it returns, so the
	// breakdown below times its return, not a stale condition.
	for _, cond := range []string{"TunnelConnected", "Ready"} {
		if err := f.waitCluster(ctx, last.Name, cond, false, 2*time.Minute); err != nil {
			t.Fatal(err)
		}
	}

	p = m.measure(ctx, fmt.Sprintf("%s returns, catches up on %s changes", last.Name, thousands(float64(nc))), func(notes map[string]string) {
		start := time.Now()
		var wg sync.WaitGroup
		var mu sync.Mutex
		wctx, stop := context.WithCancel(ctx)
		defer func() { stop(); wg.Wait() }()
		// When the hub saw the tunnel and the member Ready, for the
		// breakdown: the controller waits for Ready.
		for _, cond := range []string{"TunnelConnected", "Ready"} {
			wg.Go(func() {
				if err := f.waitCluster(wctx, last.Name, cond, true, bound); err == nil {
					mu.Lock()
					notes[cond] = time.Since(start).Round(100 * time.Millisecond).String()
					mu.Unlock()
				}
			})
		}
		if err := f.startAgent(ctx, last); err != nil {
			t.Fatal(err)
		}
		b.waitConverged(ctx, setLabel+"=change", int64(nm), nc)
		stop()
		wg.Wait()
	})
	m.print(p, fmt.Sprintf("  (tunnel up after %s, Cluster Ready after %s)", orDash(p.Notes["TunnelConnected"]), orDash(p.Notes["Ready"])))
	m.record(p)
	b.checkCopies(ctx, last, np, "2")

	// d. Delete everything.
	p = m.measure(ctx, fmt.Sprintf("delete %s Propagations and %s copies", thousands(float64(np)), thousands(float64(np*nm))), func(map[string]string) {
		b.deleteAll(ctx)
	})
	m.print(p, "")
	m.record(p)
	b.checkCopies(ctx, first, 0, "")
	t.Logf("figures written to %s", m.reportPath)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// bench drives the Propagations in the host.
type bench struct {
	t       *testing.T
	f       *fleet
	props   dynamic.ResourceInterface
	n       int // Propagations
	members int
}

func propName(i int) string { return fmt.Sprintf("scale-%04d", i) }

// create creates the Propagations, ConfigMap templates placed on every
// member by label; the first changes of them are labelled as the set
// changed later.
func (b *bench) create(ctx context.Context, changes int) {
	b.t.Helper()
	b.parallel(ctx, b.n, func(i int) error {
		set := "keep"
		if i < changes {
			set = "change"
		}
		name := propName(i)
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "backhaul.io/v1alpha1", "kind": "Propagation",
			"metadata": map[string]any{"name": name, "labels": map[string]any{benchLabel: "yes", setLabel: set}},
			"spec": map[string]any{
				"template": map[string]any{"apiVersion": "v1", "kind": "ConfigMap",
					"metadata": map[string]any{"name": name}, "data": map[string]any{"i": strconv.Itoa(i), "rev": "1"}},
				"placement": map[string]any{"clusterSelector": map[string]any{"matchLabels": map[string]any{clusterLabel: "scale"}}},
			},
		}}
		_, err := b.props.Create(ctx, obj, metav1.CreateOptions{})
		return err
	})
}

// change sets data.rev of the first n templates, a new generation each.
func (b *bench) change(ctx context.Context, n int, rev string) {
	b.t.Helper()
	patch := fmt.Appendf(nil, `{"spec":{"template":{"data":{"rev":%q}}}}`, rev)
	b.parallel(ctx, n, func(i int) error {
		_, err := b.props.Patch(ctx, propName(i), types.MergePatchType, patch, metav1.PatchOptions{})
		return err
	})
}

// parallel runs fn for 0..n-1 on clientWorkers goroutines and fails the
// test with the first error.
func (b *bench) parallel(ctx context.Context, n int, fn func(i int) error) {
	b.t.Helper()
	work := make(chan int)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range clientWorkers {
		wg.Go(func() {
			for i := range work {
				if err := fn(i); err != nil {
					errs <- fmt.Errorf("%s: %w", propName(i), err)
				}
			}
		})
	}
	for i := range n {
		select {
		case work <- i:
		case <-ctx.Done():
		}
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		b.t.Fatal(err)
	}
}

// waitConverged waits until want Propagations matching selector report
// readyClusters == ready at status.observedGeneration ==
// metadata.generation, logging progress now and then.
func (b *bench) waitConverged(ctx context.Context, selector string, ready int64, want int) {
	b.t.Helper()
	start, lastLog := time.Now(), time.Now()
	err := harness.WaitFor(ctx, bound, 2*time.Second, func() error {
		list, err := b.props.List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return err
		}
		done := 0
		for i := range list.Items {
			p := &list.Items[i]
			r, _, _ := unstructured.NestedInt64(p.Object, "status", "readyClusters")
			g, _, _ := unstructured.NestedInt64(p.Object, "status", "observedGeneration")
			if r == ready && g == p.GetGeneration() {
				done++
			}
		}
		if done >= want {
			return nil
		}
		err = fmt.Errorf("%d of %d Propagations (%s) have %d ready clusters at their generation", done, want, selector, ready)
		if time.Since(lastLog) > 30*time.Second {
			b.t.Logf("after %v: %v", time.Since(start).Round(time.Second), err)
			lastLog = time.Now()
		}
		return err
	})
	if err != nil {
		b.t.Fatal(err)
	}
}

// deleteAll deletes the bench's Propagations and waits until they are
// gone: their finalizers remove the copies from every member first.
func (b *bench) deleteAll(ctx context.Context) {
	b.t.Helper()
	if err := b.props.DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: benchLabel}); err != nil {
		b.t.Fatal(err)
	}
	start, lastLog := time.Now(), time.Now()
	err := harness.WaitFor(ctx, bound, 2*time.Second, func() error {
		list, err := b.props.List(ctx, metav1.ListOptions{LabelSelector: benchLabel})
		if err != nil {
			return err
		}
		if len(list.Items) > 0 {
			err = fmt.Errorf("%d Propagations left", len(list.Items))
			if time.Since(lastLog) > 30*time.Second {
				b.t.Logf("after %v: %v", time.Since(start).Round(time.Second), err)
				lastLog = time.Now()
			}
			return err
		}
		return nil
	})
	if err != nil {
		b.t.Fatal(err)
	}
}

// checkCopies reads member m directly (inside its namespace, as its
// admin) and checks it holds want of the bench's ConfigMaps, and that
// the first one's data.rev is rev: the figures count real copies.
func (b *bench) checkCopies(ctx context.Context, m *harness.Member, want int, rev string) {
	b.t.Helper()
	out, _, err := m.Kubectl(ctx, "-n", propNamespace, "get", "configmaps", "-o", "name")
	if err != nil {
		b.t.Fatal(err)
	}
	got := 0
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "configmap/scale-") {
			got++
		}
	}
	if got != want {
		b.t.Fatalf("%s holds %d of the bench's ConfigMaps, want %d", m.Name, got, want)
	}
	if want == 0 {
		return
	}
	out, _, err = m.Kubectl(ctx, "-n", propNamespace, "get", "configmap", propName(0), "-o", "jsonpath={.data.rev}")
	if err != nil {
		b.t.Fatal(err)
	}
	if out != rev {
		b.t.Fatalf("%s: ConfigMap %s has rev %q, want %q", m.Name, propName(0), out, rev)
	}
}
