package propagation

import (
	"context"
	"fmt"
	"runtime"
	"runtime/pprof"
	"sync"
	"syscall"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
	"backhaul.io/backhaul/test/harness"
)

// convergeCount is how many Propagations TestConverge1000 creates per
// phase.
const convergeCount = 1000

// The pprof label the suite starts the controller's manager under (in
// setup): every goroutine the manager starts inherits it, so a CPU
// profile tells the controller's CPU from this test's own client's.
const (
	controllerLabelKey   = "backhaul.io/component"
	controllerLabelValue = "propagation-controller"
)

var controllerLabels = pprof.Labels(controllerLabelKey, controllerLabelValue)

// controllerProfile profiles the process over one phase; stop says how
// much CPU the controller's goroutines used in it, and the whole process.
type controllerProfile struct{ p *harness.CPUProfile }

func startControllerProfile(t *testing.T) controllerProfile {
	t.Helper()
	p, err := harness.StartCPUProfile()
	if err != nil {
		t.Logf("no controller CPU figure: %v", err)
	}
	return controllerProfile{p}
}

// stop ends the profile and returns the controller's CPU and the
// profile's total, or ok false when there is no profile.
func (c controllerProfile) stop(t *testing.T) (controller, total time.Duration, ok bool) {
	t.Helper()
	if c.p == nil {
		return 0, 0, false
	}
	controller, total, err := harness.LabelledCPU(c.p.Stop(), controllerLabelKey, controllerLabelValue)
	if err != nil {
		t.Logf("no controller CPU figure: %v", err)
		return 0, 0, false
	}
	return controller, total, true
}

// usage is a snapshot of this process's resource use: the controller runs
// in it (so does the test's own client, which creates the Propagations and
// polls their status).
type usage struct {
	at        time.Time
	user, sys time.Duration
	maxRSS    int64 // bytes
	heap      uint64
	alloc     uint64 // cumulative
	gcs       uint32
}

func sample() usage {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return usage{
		at:     time.Now(),
		user:   time.Duration(ru.Utime.Nano()),
		sys:    time.Duration(ru.Stime.Nano()),
		maxRSS: ru.Maxrss * 1024,
		heap:   ms.HeapAlloc,
		alloc:  ms.TotalAlloc,
		gcs:    ms.NumGC,
	}
}

// report logs u's figures since since. With prof, the controller's own
// CPU (its goroutines' profile samples) comes first: the process's figure
// also counts this test's client, which creates the Propagations and
// polls their status, and the runtime's GC workers, which carry no label.
func (u usage) report(t *testing.T, what string, since usage, applies int, prof *controllerProfile) {
	t.Helper()
	wall := u.at.Sub(since.at)
	cpu := u.user - since.user + u.sys - since.sys
	ctl := ""
	if prof != nil {
		if c, total, ok := prof.stop(t); ok {
			ctl = fmt.Sprintf("controller CPU %v (%.0f%% of one core; %.0f%% of the %v the profile saw); ",
				c.Round(time.Millisecond), 100*c.Seconds()/wall.Seconds(), 100*c.Seconds()/max(total.Seconds(), 1e-9), total.Round(time.Millisecond))
		}
	}
	t.Logf("%s: %v wall, %.0f applies/s; %sprocess CPU %v (user %v, sys %v, %.0f%% of one core); heap %.1f MiB, allocated %.0f MiB, %d GCs, max RSS %.0f MiB, %d goroutines",
		what, wall.Round(time.Millisecond), float64(applies)/wall.Seconds(), ctl,
		cpu.Round(time.Millisecond), (u.user - since.user).Round(time.Millisecond), (u.sys - since.sys).Round(time.Millisecond),
		100*cpu.Seconds()/wall.Seconds(),
		float64(u.heap)/(1<<20), float64(u.alloc-since.alloc)/(1<<20), u.gcs-since.gcs, float64(u.maxRSS)/(1<<20), runtime.NumGoroutine())
}

// TestConverge1000 measures how long 1,000 Propagations × 3 members take
// to converge (every cluster Applied), then the same with one member
// offline while they are created and returning afterwards, with the
// controller's own CPU (from a CPU profile, by the label its manager runs
// under) next to the whole process's, and memory. Run it with
//
//	go test -count=1 -v -timeout 30m -run Converge1000 ./test/e2e/propagation/ -propagation.bench
func TestConverge1000(t *testing.T) {
	if !benchEnabled() {
		t.Skip("a benchmark: run with -propagation.bench or BACKHAUL_BENCH=1")
	}
	e := requireEnv(t)
	ns := e.namespace(t, "prop-bench")
	t.Cleanup(func() { e.deleteAll(t, ns) })
	runtime.GC()

	start := sample()
	prof := startControllerProfile(t)
	e.createMany(t, ns, "all", convergeCount)
	created := sample()
	created.report(t, fmt.Sprintf("created %d propagations", convergeCount), start, 0, nil)
	e.waitCount(t, ns, "all-", 3, convergeCount)
	sample().report(t, fmt.Sprintf("%d propagations × 3 members converged", convergeCount), start, 3*convergeCount, &prof)

	// pm3 offline while another thousand are created, then back.
	e.disconnect(t, "pm3")
	start = sample()
	prof = startControllerProfile(t)
	e.createMany(t, ns, "off", convergeCount)
	e.waitCount(t, ns, "off-", 2, convergeCount)
	sample().report(t, fmt.Sprintf("%d propagations × 2 members converged, pm3 offline", convergeCount), start, 2*convergeCount, &prof)
	start = sample()
	prof = startControllerProfile(t)
	e.reconnect("pm3")
	e.waitCount(t, ns, "off-", 3, convergeCount)
	sample().report(t, fmt.Sprintf("pm3 returned and caught up on %d propagations", convergeCount), start, convergeCount, &prof)
}

// createMany creates n ConfigMap Propagations for the three members.
func (e *environment) createMany(t *testing.T, ns, prefix string, n int) {
	t.Helper()
	ctx := context.Background()
	work := make(chan int)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i := range work {
				name := fmt.Sprintf("%s-%04d", prefix, i)
				p := newPropagation(t, ns, name, configMapTemplate(name, "x"), v1alpha1.ClusterSelection{ClusterSelector: suiteSelector})
				if err := e.hostClient.Create(ctx, p); err != nil {
					errs <- err
				}
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("create: %v", err)
	}
}

// waitCount waits until n Propagations named prefix* have ready clusters
// at their current generation.
func (e *environment) waitCount(t *testing.T, ns, prefix string, ready int32, n int) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(20 * time.Minute)
	for {
		var list v1alpha1.PropagationList
		if err := e.hostClient.List(ctx, &list, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		done := 0
		for _, p := range list.Items {
			if len(p.Name) > len(prefix) && p.Name[:len(prefix)] == prefix &&
				p.Status.ObservedGeneration == p.Generation && p.Status.ReadyClusters == ready {
				done++
			}
		}
		if done >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d %s* propagations have %d ready clusters", done, n, prefix, ready)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// deleteAll deletes every Propagation in ns and waits for their finalizers.
func (e *environment) deleteAll(t *testing.T, ns string) {
	ctx := context.Background()
	start := time.Now()
	var list v1alpha1.PropagationList
	if err := e.hostClient.List(ctx, &list, client.InNamespace(ns)); err != nil {
		t.Errorf("list propagations: %v", err)
		return
	}
	work := make(chan *v1alpha1.Propagation)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for p := range work {
				if err := e.hostClient.Delete(ctx, p); err != nil && !apierrors.IsNotFound(err) {
					t.Errorf("delete %s: %v", p.Name, err)
				}
			}
		})
	}
	for i := range list.Items {
		work <- &list.Items[i]
	}
	close(work)
	wg.Wait()
	for time.Since(start) < 10*time.Minute {
		if err := e.hostClient.List(ctx, &list, client.InNamespace(ns)); err != nil || len(list.Items) == 0 {
			t.Logf("deleted all propagations and their copies in %v", time.Since(start).Round(time.Millisecond))
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Errorf("propagations in %s not deleted after 10m", ns)
}
