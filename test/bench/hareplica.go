package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"backhaul.io/backhaul/test/harness"
)

// haReplica is one backhaul-hub process of an active-active hub: host
// registry, peer listener, its own name, and the files every replica
// shares.
type haReplica struct {
	name     string
	port     int
	peerPort int
	url      string // https://127.0.0.1:PORT
	adminURL string // http://127.0.0.1:ADMINPORT
	proc     *harness.Process
}

// haMetricsClient reads replicas' /metrics; a killed replica must not
// stall a poll for long, but one busy with a storm answers late.
var haMetricsClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 2}}

// startReplica publishes the replica's peer endpoint, starts it and waits
// until it is ready. The TLS listener is on every interface, so agents in
// member namespaces reach it on their HostIP; the peer listener is on the
// host's HostIP (see haHost.peerIP), the admin one on loopback.
func startReplica(ctx context.Context, bin, dir, name string, host *haHost, files *haFiles) (*haReplica, error) {
	r := &haReplica{name: name}
	var adminPort int
	for _, p := range []*int{&r.port, &adminPort, &r.peerPort} {
		var err error
		if *p, err = harness.FreePort(); err != nil {
			return nil, err
		}
	}
	r.url = fmt.Sprintf("https://127.0.0.1:%d", r.port)
	r.adminURL = fmt.Sprintf("http://127.0.0.1:%d", adminPort)
	if err := host.publishPeer(ctx, name, r.peerPort); err != nil {
		return nil, err
	}
	args := []string{
		"--listen", fmt.Sprintf(":%d", r.port),
		"--admin-listen", fmt.Sprintf("127.0.0.1:%d", adminPort), "--profiling",
		"--tls-cert-file", files.certFile, "--tls-key-file", files.keyFile,
		"--token-auth-file", files.callers,
		"--agent-token-file", files.agents,
		"--registry=kube", "--kubeconfig", host.kubeconfig, "--namespace", haNamespace,
		"--ca-cert-file", files.ca.CertFile, "--ca-key-file", files.ca.KeyFile,
		"--peer-listen", fmt.Sprintf("%s:%d", host.peerIP(), r.peerPort),
		"--peers-service", haPeersService, "--replica-name", name,
		"--shutdown-grace", "2s", "--shutdown-delay", "0s",
	}
	p, err := harness.Start(ctx, name, dir, exec.Command(bin, args...))
	if err != nil {
		return nil, err
	}
	r.proc = p
	err = harness.WaitFor(ctx, 60*time.Second, 100*time.Millisecond, func() error {
		select {
		case <-p.Exited():
			return fmt.Errorf("exited during start-up: %v", p.Err())
		default:
		}
		resp, err := haMetricsClient.Get(r.adminURL + "/readyz")
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz: %s", resp.Status)
		}
		return nil
	})
	if err != nil {
		return r, fmt.Errorf("replica %s not ready: %w\n%s", name, err, p.Tail(30))
	}
	return r, nil
}

// stop ends the replica with SIGTERM (it drains for --shutdown-grace).
func (r *haReplica) stop() {
	if r != nil && r.proc != nil {
		r.proc.Stop()
	}
}

func (r *haReplica) pid() int { return r.proc.PID() }

// backend is the replica's TLS listener as a load balancer reaches it:
// on the host's HostIP, not loopback (see harness.VIP).
func (r *haReplica) backend(h *haHost) netip.AddrPort {
	return netip.AddrPortFrom(h.member.Netns.HostIP, uint16(r.port))
}

// metrics reads every series of the replica's /metrics, keyed by name and
// labels as printed ("name{label=\"v\"}").
func (r *haReplica) metrics(ctx context.Context) (series, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.adminURL+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := haMetricsClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil, fmt.Errorf("%s /metrics: %s", r.name, resp.Status)
	}
	return parseSeries(resp.Body)
}

// parseSeries reads Prometheus text: every series keyed by name and
// labels as printed ("name{label=\"v\"}").
func parseSeries(r io.Reader) (series, error) {
	out := series{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

// series is one scrape; a series the replica has not created reads 0
// (counters with labels appear on first use).
type series map[string]float64

// sum adds the series of metric name whose labels include every one of
// labels (each as printed, `key="value"`).
func (s series) sum(name string, labels ...string) float64 {
	total := 0.0
	for k, v := range s {
		rest, ok := strings.CutPrefix(k, name)
		if !ok || (rest != "" && rest[0] != '{') {
			continue
		}
		match := true
		for _, l := range labels {
			match = match && strings.Contains(rest, l)
		}
		if match {
			total += v
		}
	}
	return total
}

// Series of the HA section.
const (
	mSessions = "backhaul_hub_sessions"
	mBusy     = `backhaul_hub_session_connects_total{result="busy"}`
	mOK       = `backhaul_hub_session_connects_total{result="ok"}`
	mPeers    = "backhaul_hub_peer_connections"
	mReplicas = "backhaul_hub_replicas"
	mLeading  = "backhaul_hub_singleton_leading"
	mGo       = "go_goroutines"
	mHeap     = "go_memstats_heap_inuse_bytes"
	mStack    = "go_memstats_stack_inuse_bytes"
)

// sumMetric adds one series over replicas; it fails if any cannot be read.
func sumMetric(ctx context.Context, rs []*haReplica, name string) (float64, error) {
	total := 0.0
	for _, r := range rs {
		m, err := r.metrics(ctx)
		if err != nil {
			return 0, err
		}
		total += m[name]
	}
	return total, nil
}

// waitPeers waits until every replica holds a peer connection with each
// of the others.
func waitPeers(ctx context.Context, rs []*haReplica, limit time.Duration) error {
	return harness.WaitFor(ctx, limit, 200*time.Millisecond, func() error {
		for _, r := range rs {
			m, err := r.metrics(ctx)
			if err != nil {
				return err
			}
			if int(m[mPeers]) != len(rs)-1 {
				return fmt.Errorf("%s has %v peer connections, want %d", r.name, m[mPeers], len(rs)-1)
			}
		}
		return nil
	})
}

// saveProfile fetches one of the replica's /debug/pprof profiles into
// dir/name.pprof and returns the path.
func (r *haReplica) saveProfile(ctx context.Context, dir, name, query string) (string, error) {
	path := filepath.Join(dir, name+".pprof")
	if err := fetchProfile(ctx, r.adminURL+"/debug/pprof/"+query, path); err != nil {
		return "", fmt.Errorf("%s: %w", r.name, err)
	}
	return path, nil
}
