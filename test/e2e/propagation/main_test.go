// Package propagation runs the Propagation controller in-process against
// real kube-apiservers: a host cluster holding the Cluster and Propagation
// CRDs, and three members, each in its own network namespace. The hub's
// tunnels are stood in for by direct connections (the namespaces allow
// inbound 6443) behind a switch that takes a member "offline".
package propagation

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"backhaul.io/backhaul/hub/propagation"
	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
	apischeme "backhaul.io/backhaul/pkg/apis/scheme"
	"backhaul.io/backhaul/test/harness"
)

// The hub's pusher identity (hub.HubUser, hub.HubPusherGroup), spelled out
// so this suite does not build the hub server.
const (
	hubUser        = "backhaul:hub"
	hubPusherGroup = "backhaul:propagators"
)

// Topology: host "ph" and members "pm1".."pm3" on netns indexes 70..73.
const (
	hostName  = "ph"
	hostIndex = 70
	// e2eLabel marks the suite's Clusters; placements select on it.
	e2eLabel = "e2e.backhaul.io/suite"
	// resync is the controller's drift resync in this suite (unless the
	// benchmark runs).
	resync = 2 * time.Second
	// bound is how long a test waits for anything to converge: generous,
	// it fails only when something is stuck.
	bound = 90 * time.Second
	// maxWatchedCopies is the controller's bound on the labelled objects
	// of one kind it watches in one member, in this suite.
	maxWatchedCopies = 50
)

var memberNames = []string{"pm1", "pm2", "pm3"}

var benchFlag = flag.Bool("propagation.bench", false, "run TestConverge1000 (also BACKHAUL_BENCH=1)")

func benchEnabled() bool { return *benchFlag || os.Getenv("BACKHAUL_BENCH") == "1" }

type environment struct {
	dir     string
	host    *harness.Member
	members map[string]*harness.Member
	// hostClient reads and writes the host (Clusters, Propagations).
	hostClient client.Client
	// memberDyn reads members directly as admin, bypassing the switch.
	memberDyn map[string]*dynamic.DynamicClient
	switches  *switchedMembers
	logPath   string
	// metrics is the controller's registry.
	metrics *prometheus.Registry
}

var (
	env      *environment
	setupErr error
)

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(harness.RunSuite(m, "propagation", 5*time.Minute, &env, &setupErr, setup))
}

func requireEnv(t *testing.T) *environment {
	t.Helper()
	if env == nil {
		harness.Skip(t, "%v", setupErr)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("controller log (tail of %s):\n%s", env.logPath, tail(env.logPath, 60))
		}
	})
	return env
}

func setup(ctx context.Context, cl *harness.Cleanups) (_ *environment, err error) {
	if _, err := harness.LocateBinaries(); err != nil {
		return nil, fmt.Errorf("%w (run `make kube-bins deps`)", err)
	}
	if _, err := harness.CleanupStale(harness.NetnsPrefix); err != nil {
		return nil, err
	}
	e := &environment{members: map[string]*harness.Member{}, memberDyn: map[string]*dynamic.DynamicClient{}}
	if e.dir, err = os.MkdirTemp("", "backhaul-propagation-e2e-"); err != nil {
		return nil, err
	}
	cl.Add(func() {
		if os.Getenv("BACKHAUL_E2E_KEEP") == "" {
			_ = os.RemoveAll(e.dir)
		} else {
			fmt.Fprintf(os.Stderr, "propagation e2e: logs kept in %s\n", e.dir)
		}
	})

	// Start the four API servers at once: that is the slow part.
	names := append([]string{hostName}, memberNames...)
	cfgs := make([]harness.MemberConfig, len(names))
	for i, n := range names {
		cfgs[i] = harness.MemberConfig{Name: n, Index: hostIndex + i, Dir: filepath.Join(e.dir, n)}
	}
	started, err := harness.StartMembers(ctx, cl, cfgs...)
	if err != nil {
		return nil, err
	}
	for i, m := range started {
		// The controller runs in the root namespace and reaches every
		// API server directly (standing in for the tunnels).
		if err := m.Netns.AllowInbound(harness.APIServerPort); err != nil {
			return nil, err
		}
		if i == 0 {
			e.host = m
		} else {
			e.members[m.Name] = m
		}
	}

	root, err := harness.RepoRoot()
	if err != nil {
		return nil, err
	}
	crds := filepath.Join(root, "deploy", "hub", "crds")
	if _, stderr, err := e.host.Kubectl(ctx, "apply", "--server-side", "-f", crds); err != nil {
		return nil, fmt.Errorf("install CRDs: %w: %s", err, stderr)
	}
	if _, stderr, err := e.host.Kubectl(ctx, "wait", "--for=condition=Established", "--timeout=60s",
		"crd/clusters.backhaul.io", "crd/propagations.backhaul.io"); err != nil {
		return nil, fmt.Errorf("wait for CRDs: %w: %s", err, stderr)
	}

	scheme, err := apischeme.New()
	if err != nil {
		return nil, err
	}
	if e.hostClient, err = client.New(adminConfig(e.host), client.Options{Scheme: scheme}); err != nil {
		return nil, err
	}

	e.switches = &switchedMembers{cfgs: map[string]*rest.Config{}, down: map[string]bool{}}
	for _, n := range memberNames {
		m := e.members[n]
		// What onboard.sh does: the hub's propagators may write anything.
		if _, stderr, err := m.Kubectl(ctx, "create", "clusterrolebinding", "backhaul-propagators",
			"--clusterrole=cluster-admin", "--group="+hubPusherGroup); err != nil {
			return nil, fmt.Errorf("grant %s in %s: %w: %s", hubPusherGroup, n, err, stderr)
		}
		if e.memberDyn[n], err = dynamic.NewForConfig(adminConfig(m)); err != nil {
			return nil, err
		}
		cfg := adminConfig(m)
		cfg.Impersonate = rest.ImpersonationConfig{UserName: hubUser, Groups: []string{hubPusherGroup}}
		e.switches.cfgs[n] = cfg
		c := &v1alpha1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{e2eLabel: "propagation", "region": "r" + n[2:]}}}
		if err := e.hostClient.Create(ctx, c); err != nil {
			return nil, fmt.Errorf("create Cluster %s: %w", n, err)
		}
		if err := e.setReady(ctx, n, true); err != nil {
			return nil, err
		}
	}

	// The controller, in-process, its logs in a file a failing test shows.
	e.logPath = filepath.Join(e.dir, "controller.log")
	logFile, err := os.Create(e.logPath)
	if err != nil {
		return nil, err
	}
	cl.Add(func() { logFile.Close() })
	log := hclog.New(&hclog.LoggerOptions{Name: "hub", Level: hclog.Debug, Output: logFile})
	ctrllog.SetLogger(funcr.New(func(prefix, args string) { log.Named("controller-runtime").Info(prefix + " " + args) }, funcr.Options{}))

	mgr, err := ctrl.NewManager(adminConfig(e.host), ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		return nil, err
	}
	opts := propagation.DefaultOptions()
	opts.Log = log
	e.metrics = prometheus.NewRegistry()
	opts.Metrics = propagation.NewMetrics(e.metrics)
	if !benchEnabled() {
		// Short, so that every test also runs through full resyncs,
		// which must write nothing the member watches vouch for; the
		// benchmark keeps the production period.
		opts.Resync = resync
		// Small, so that a member can be shown to exceed it.
		opts.MaxWatchedCopies = maxWatchedCopies
	}
	opts.RetryMax = 5 * time.Second
	if err := propagation.Setup(mgr, e.switches, opts); err != nil {
		return nil, err
	}
	mctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	// Under pprof labels, which the manager's goroutines inherit, so
	// TestConverge1000 tells the controller's CPU from the test's own.
	go pprof.Do(mctx, controllerLabels, func(ctx context.Context) { done <- mgr.Start(ctx) })
	cl.Add(func() {
		stop()
		select {
		case err := <-done:
			if err != nil {
				fmt.Fprintf(os.Stderr, "propagation e2e: manager: %v\n", err)
			}
		case <-time.After(30 * time.Second):
			fmt.Fprintln(os.Stderr, "propagation e2e: manager did not stop")
		}
	})
	syncCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if !mgr.GetCache().WaitForCacheSync(syncCtx) {
		return nil, errors.New("manager cache did not sync")
	}
	return e, nil
}

// adminConfig reaches m directly from the root namespace as its admin.
func adminConfig(m *harness.Member) *rest.Config {
	return &rest.Config{
		Host:            m.ExternalURL,
		BearerToken:     m.AdminToken,
		TLSClientConfig: rest.TLSClientConfig{CAData: m.CAPEM},
		QPS:             -1,
		Timeout:         30 * time.Second,
	}
}

// switchedMembers implements propagation.Members with direct connections
// that a test can switch off, as when an agent's tunnel goes away.
type switchedMembers struct {
	mu       sync.Mutex
	cfgs     map[string]*rest.Config
	down     map[string]bool
	watchers []func(string)
	// writes counts the controller's writes (PATCH, PUT, POST, DELETE) by
	// the namespace of their path ("" for cluster-scoped ones).
	writes map[string]int
}

var _ propagation.Members = (*switchedMembers)(nil)

// closedPort is where a disconnected member's config points: nothing
// listens there, so any call fails at once, as through a missing tunnel.
const closedPort = "https://127.0.0.1:1"

func (s *switchedMembers) Config(cluster string) *rest.Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cfg := s.cfgs[cluster]; cfg != nil && !s.down[cluster] {
		cfg = rest.CopyConfig(cfg)
		cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
			return roundTripFunc(func(req *http.Request) (*http.Response, error) {
				if req.Method != http.MethodGet {
					s.countWrite(req.URL.Path)
				}
				return rt.RoundTrip(req)
			})
		})
		return cfg
	}
	return &rest.Config{Host: closedPort, Timeout: 5 * time.Second}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func (s *switchedMembers) countWrite(path string) {
	ns := ""
	if _, rest, ok := strings.Cut(path, "/namespaces/"); ok {
		ns, _, _ = strings.Cut(rest, "/")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.writes == nil {
		s.writes = map[string]int{}
	}
	s.writes[ns]++
}

// writesIn returns how many writes the controller made to objects in
// namespace ns of any member.
func (s *switchedMembers) writesIn(ns string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writes[ns]
}

func (s *switchedMembers) Connected(cluster string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfgs[cluster] != nil && !s.down[cluster]
}

func (s *switchedMembers) Watch(fn func(string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.watchers = append(s.watchers, fn)
}

// set takes cluster offline or brings it back, and tells the watchers.
func (s *switchedMembers) set(cluster string, connected bool) {
	s.mu.Lock()
	changed := s.down[cluster] == connected
	s.down[cluster] = !connected
	ws := s.watchers
	s.mu.Unlock()
	if changed {
		for _, fn := range ws {
			fn(cluster)
		}
	}
}

// disconnect takes cluster offline until the test ends (or reconnect).
func (e *environment) disconnect(t *testing.T, cluster string) {
	t.Helper()
	e.switches.set(cluster, false)
	t.Cleanup(func() { e.switches.set(cluster, true) })
}

func (e *environment) reconnect(cluster string) { e.switches.set(cluster, true) }

// setReady writes cluster's Ready (and TunnelConnected) condition, as the
// hub's Cluster status controller does.
func (e *environment) setReady(ctx context.Context, cluster string, ready bool) error {
	var c v1alpha1.Cluster
	if err := e.hostClient.Get(ctx, types.NamespacedName{Name: cluster}, &c); err != nil {
		return err
	}
	st := metav1.ConditionFalse
	reason := "ReadyzFailed"
	if ready {
		st, reason = metav1.ConditionTrue, "ReadyzOK"
	}
	meta.SetStatusCondition(&c.Status.Conditions, metav1.Condition{Type: v1alpha1.ClusterTunnelConnected, Status: metav1.ConditionTrue, Reason: "Connected"})
	meta.SetStatusCondition(&c.Status.Conditions, metav1.Condition{Type: v1alpha1.ClusterReady, Status: st, Reason: reason})
	if err := e.hostClient.Status().Update(ctx, &c); err != nil {
		return fmt.Errorf("set Cluster %s Ready=%v: %w", cluster, ready, err)
	}
	return nil
}

// namespace creates a fresh namespace in the host for one test and deletes
// it (and its propagations, and the namespace in the members) at the end.
func (e *environment) namespace(t *testing.T, name string) string {
	t.Helper()
	ctx := context.Background()
	if err := e.hostClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		// Propagations first, so their finalizers run while the members
		// are connected, then the namespaces everywhere.
		var list v1alpha1.PropagationList
		if err := e.hostClient.List(ctx, &list, client.InNamespace(name)); err == nil {
			for i := range list.Items {
				_ = e.hostClient.Delete(ctx, &list.Items[i])
			}
			deadline := time.Now().Add(bound)
			for time.Now().Before(deadline) {
				if err := e.hostClient.List(ctx, &list, client.InNamespace(name)); err != nil || len(list.Items) == 0 {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			if len(list.Items) > 0 {
				t.Errorf("cleanup: %d propagations in %s still there after %v", len(list.Items), name, bound)
			}
		}
		_ = e.hostClient.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
		for _, n := range memberNames {
			_ = e.memberDyn[n].Resource(namespaceGVR).Delete(ctx, name, metav1.DeleteOptions{})
		}
	})
	return name
}

// eventually polls cond every 100 ms until it holds or bound passes, then
// fails with cond's last account of what it saw.
func eventually(t *testing.T, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	var last string
	for {
		ok, state := cond()
		if ok {
			return time.Since(start)
		}
		last = state
		if time.Since(start) > bound {
			t.Fatalf("%s: not within %v; last: %s", what, bound, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

var namespaceGVR = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
