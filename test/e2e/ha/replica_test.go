package ha

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
	"backhaul.io/backhaul/test/harness"
)

// replica is one backhaul-hub process, the way one Pod of the hub's
// Deployment would run: its own name and ports on the "node" (the root
// namespace, at the host cluster link's address), the shared CA and
// serving certificate, and ServiceAccount backhaul-hub's token. It reaches
// the host API server only through fwd, so a test can cut it off.
type replica struct {
	e          *environment
	name       string
	dir        string
	port       int // TLS: agents and callers
	adminPort  int // /readyz, /metrics
	peerPort   int // other replicas
	fwd        *harness.Forwarder
	kubeconfig string

	mu   sync.Mutex
	proc *harness.Process
}

func (e *environment) newReplica(name string) (*replica, error) {
	r := &replica{e: e, name: name, dir: filepath.Join(e.dir, name)}
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		return nil, err
	}
	for _, p := range []*int{&r.port, &r.adminPort, &r.peerPort} {
		var err error
		if *p, err = harness.FreePort(); err != nil {
			return nil, err
		}
	}
	var err error
	if r.fwd, err = harness.NewForwarder(fmt.Sprintf("%s:%d", e.host.Netns.NSIP, harness.APIServerPort)); err != nil {
		return nil, err
	}
	// The host API server's certificate names 127.0.0.1, where the
	// forwarder listens.
	r.kubeconfig = filepath.Join(r.dir, "host.kubeconfig")
	if err := harness.WriteKubeconfig(r.kubeconfig, "https://"+r.fwd.Addr, e.host.CAPEM, e.hubToken); err != nil {
		_ = r.fwd.Close()
		return nil, err
	}
	return r, nil
}

func (r *replica) nodeIP() string { return r.e.host.Netns.HostIP.String() }

// backend is where the virtual IP sends this replica's connections.
func (r *replica) backend() netip.AddrPort {
	return netip.AddrPortFrom(r.e.host.Netns.HostIP, uint16(r.port))
}

func (r *replica) adminURL() string { return fmt.Sprintf("http://127.0.0.1:%d", r.adminPort) }

func (r *replica) args() []string {
	e := r.e
	return []string{
		"--replica-name", r.name,
		"--listen", fmt.Sprintf(":%d", r.port),
		"--admin-listen", fmt.Sprintf("127.0.0.1:%d", r.adminPort),
		"--peer-listen", fmt.Sprintf("%s:%d", r.nodeIP(), r.peerPort),
		"--peers-service", peersService,
		"--registry=kube", "--kubeconfig", r.kubeconfig, "--namespace", ns,
		"--ca-cert-file", e.ca.CertFile, "--ca-key-file", e.ca.KeyFile,
		"--tls-cert-file", e.servingCert, "--tls-key-file", e.servingKey,
		"--advertise-url", "wss://" + e.vip.String(),
		"--cluster-status-interval", "1s", "--cluster-heartbeat-interval", "5s",
	}
}

// start runs the process; it does not wait for it to serve.
func (r *replica) start(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc != nil {
		select {
		case <-r.proc.Exited():
		default:
			return fmt.Errorf("%s is already running", r.name)
		}
	}
	p, err := harness.Start(ctx, r.name, r.dir, exec.Command(r.e.hubBin, r.args()...))
	if err != nil {
		return err
	}
	r.proc = p
	return nil
}

func (r *replica) process() *harness.Process {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.proc
}

// running says whether the process is up.
func (r *replica) running() bool {
	p := r.process()
	if p == nil {
		return false
	}
	select {
	case <-p.Exited():
		return false
	default:
		return true
	}
}

// kill is kill -9.
func (r *replica) kill() {
	if p := r.process(); p != nil {
		p.Kill()
	}
}

// close stops the process (whatever state it is in) and the forwarder.
func (r *replica) close() {
	r.kill()
	_ = r.fwd.Close()
}

// tail is the end of the replica's log, for failure messages.
func (r *replica) tail(n int) string {
	if p := r.process(); p != nil {
		return fmt.Sprintf("--- %s (%s) ---\n%s", r.name, p.LogPath(), p.Tail(n))
	}
	return ""
}

var adminClient = &http.Client{Timeout: 2 * time.Second}

func (r *replica) readyz() int {
	resp, err := adminClient.Get(r.adminURL() + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// metrics reads the unlabelled series of /metrics.
func (r *replica) metrics(ctx context.Context) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.adminURL()+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := adminClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s /metrics: %s", r.name, resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || strings.Contains(line, "{") {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
			out[name] = v
		}
	}
	return out, sc.Err()
}

// gauge is one series of r's /metrics.
func (r *replica) gauge(ctx context.Context, name string) (float64, error) {
	m, err := r.metrics(ctx)
	if err != nil {
		return 0, err
	}
	v, ok := m[name]
	if !ok {
		return 0, fmt.Errorf("%s /metrics has no %s", r.name, name)
	}
	return v, nil
}

func (e *environment) runningReplicas() []*replica {
	var out []*replica
	for _, r := range e.replicas {
		if r.running() {
			out = append(out, r)
		}
	}
	return out
}

// publishEndpoints writes r's EndpointSlice of the peer Service, as the
// endpointslice controller would for its Pod: its address, port "peer",
// and targetRef naming the replica. The Service publishes not-ready
// addresses, so a terminating replica stays listed (terminating) until
// it is gone.
func (e *environment) publishEndpoints(ctx context.Context, r *replica, terminating bool) error {
	yes := true
	port, proto, name := int32(r.peerPort), corev1.ProtocolTCP, "peer"
	want := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name: peersService + "-" + r.name, Namespace: ns,
			Labels: map[string]string{
				discoveryv1.LabelServiceName: peersService,
				discoveryv1.LabelManagedBy:   "backhaul-e2e",
			},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{r.nodeIP()},
			Conditions: discoveryv1.EndpointConditions{Ready: &yes, Serving: &yes, Terminating: &terminating},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: r.name},
		}},
		Ports: []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &proto}},
	}
	c := e.hostClient.DiscoveryV1().EndpointSlices(ns)
	cur, err := c.Get(ctx, want.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = c.Create(ctx, want, metav1.CreateOptions{})
	case err == nil:
		want.ResourceVersion = cur.ResourceVersion
		_, err = c.Update(ctx, want, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("endpointslice of %s: %w", r.name, err)
	}
	return nil
}

// withdrawEndpoints deletes r's EndpointSlice, as the controller does
// once its Pod is gone.
func (e *environment) withdrawEndpoints(ctx context.Context, r *replica) error {
	err := e.hostClient.DiscoveryV1().EndpointSlices(ns).Delete(ctx, peersService+"-"+r.name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("endpointslice of %s: %w", r.name, err)
	}
	return nil
}

// waitServing waits until r is ready and every running replica counts all
// of them and has a peer connection with each other one.
func (e *environment) waitServing(ctx context.Context, r *replica) error {
	err := harness.WaitFor(ctx, 2*time.Minute, 200*time.Millisecond, func() error {
		if !r.running() {
			return fmt.Errorf("%s exited: %v", r.name, r.process().Err())
		}
		if c := r.readyz(); c != http.StatusOK {
			return fmt.Errorf("%s /readyz %d", r.name, c)
		}
		return e.meshComplete(ctx)
	})
	if err != nil {
		var logs strings.Builder
		for _, x := range e.replicas {
			logs.WriteString(x.tail(25) + "\n")
		}
		return fmt.Errorf("%s not serving with its peers: %w\n%s", r.name, err, logs.String())
	}
	return nil
}

// meshComplete says every running replica counts the running replicas
// and is connected to each of the others.
func (e *environment) meshComplete(ctx context.Context) error {
	run := e.runningReplicas()
	for _, x := range run {
		m, err := x.metrics(ctx)
		if err != nil {
			return err
		}
		if got := m["backhaul_hub_replicas"]; int(got) != len(run) {
			return fmt.Errorf("%s counts %v replicas, want %d", x.name, got, len(run))
		}
		if got := m["backhaul_hub_peer_connections"]; int(got) != len(run)-1 {
			return fmt.Errorf("%s has %v peer connections, want %d", x.name, got, len(run)-1)
		}
	}
	return nil
}

// directory is the session directory as the host has it: replica name →
// its HubReplica status.
func (e *environment) directory(ctx context.Context) (map[string]v1alpha1.HubReplicaStatus, error) {
	raw, err := e.hostClient.Discovery().RESTClient().Get().
		AbsPath("/apis/backhaul.io/v1alpha1/namespaces", ns, "hubreplicas").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("list hubreplicas: %w", err)
	}
	var list v1alpha1.HubReplicaList
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, err
	}
	out := map[string]v1alpha1.HubReplicaStatus{}
	for _, r := range list.Items {
		out[r.Name] = r.Status
	}
	return out, nil
}

// placement is cluster → the running, not draining replicas that publish
// a session of it.
func (e *environment) placement(ctx context.Context) (map[string][]string, error) {
	dir, err := e.directory(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, r := range e.runningReplicas() {
		st, ok := dir[r.name]
		if !ok || st.Draining {
			continue
		}
		for _, c := range st.Clusters {
			out[c.Name] = append(out[c.Name], r.name)
		}
	}
	for _, rs := range out {
		slices.Sort(rs)
	}
	return out, nil
}

// waitSpread waits until every member's agent holds sessions on two
// distinct running replicas (--hub-connections 2), and returns the
// placement.
func (e *environment) waitSpread(ctx context.Context, timeout time.Duration) error {
	var last map[string][]string
	err := harness.WaitFor(ctx, timeout, 250*time.Millisecond, func() error {
		p, err := e.placement(ctx)
		if err != nil {
			return err
		}
		last = p
		for _, c := range memberNames {
			if len(p[c]) < 2 {
				return fmt.Errorf("cluster %s held by %v, want two replicas", c, p[c])
			}
		}
		return nil
	})
	if err != nil {
		var logs strings.Builder
		for _, c := range memberNames {
			logs.WriteString(fmt.Sprintf("--- agent-%s ---\n%s\n", c, e.agent(c).Tail(25)))
		}
		return fmt.Errorf("agents did not spread over two replicas (last placement %v): %w\n%s", last, err, logs.String())
	}
	return nil
}

// waitRoutable waits until every running replica serves every member: the
// placement the test reads from the host is what each replica's directory
// informer learns a moment later (a session registered elsewhere becomes
// routable here about a second after, by the directory's batching), and a
// scenario's traffic must start on a settled fleet.
func (e *environment) waitRoutable(ctx context.Context, timeout time.Duration) error {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: e.hubTLS(), DisableKeepAlives: true}}
	return harness.WaitFor(ctx, timeout, 100*time.Millisecond, func() error {
		for _, r := range e.runningReplicas() {
			for _, c := range memberNames {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("https://127.0.0.1:%d/clusters/%s/api", r.port, c), nil)
				req.Header.Set("Authorization", "Bearer "+e.callerToken)
				resp, err := client.Do(req)
				if err != nil {
					return fmt.Errorf("%s for %s: %w", r.name, c, err)
				}
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					return fmt.Errorf("%s for %s: %s", r.name, c, resp.Status)
				}
			}
		}
		return nil
	})
}

// restore brings r back the way a new Pod comes up: the process, its
// EndpointSlice, ready with its peers, then back behind the virtual IP
// (the tests wait for the peer connections before admitting it, so a
// replica serves with its peers from its first request).
func (e *environment) restore(ctx context.Context, r *replica) error {
	if !r.running() {
		if err := r.start(ctx); err != nil {
			return err
		}
	}
	if err := e.publishEndpoints(ctx, r, false); err != nil {
		return err
	}
	if err := e.waitServing(ctx, r); err != nil {
		return err
	}
	return e.endpoints.admit(r, true, "ready with its peers")
}

// restoreAll is a test's cleanup: every replica running, connected to
// the host, listed and behind the virtual IP, and the agents spread again,
// so the next test starts from the same place.
func (e *environment) restoreAll() error {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var errs []error
	for _, r := range e.replicas {
		r.fwd.Restore()
		if err := e.restore(ctx, r); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		errs = append(errs, e.waitSpread(ctx, 2*time.Minute), e.waitRoutable(ctx, time.Minute))
	}
	return errors.Join(errs...)
}
