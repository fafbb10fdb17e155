package harness

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"
)

// SharedEtcdPort is the client port of a [SharedEtcd].
const SharedEtcdPort = 2379

// SharedEtcdConfig describes an etcd that several members' API servers
// share, each under its own key prefix: cheap members for fleet-sized
// benchmarks (one etcd process instead of one per member).
type SharedEtcdConfig struct {
	// Name labels the anchor namespace (NetnsPrefix+Name) and etcd's
	// member name.
	Name string
	// Index picks the anchor namespace's 10.251.<Index>.0/30 subnet.
	Index int
	// Dir holds etcd's data and log.
	Dir string
}

// SharedEtcd is an etcd in the root network namespace, listening only on
// the root-namespace end (HostIP) of an otherwise empty anchor namespace.
// Member namespaces reach it through their default route to the root
// namespace, which delivers locally to any of its own addresses, the way
// agents reach a hub. It does not run in a namespace of its own because
// namespace-to-namespace traffic would need the root namespace to forward
// between veths, which a host firewall (Docker's FORWARD DROP, for one)
// may forbid. Nothing but loopback and the member namespaces routes to the
// address.
type SharedEtcd struct {
	// URL is the client URL to pass as MemberConfig.EtcdServers.
	URL string
	// Netns is the anchor namespace whose HostIP etcd listens on.
	Netns *Netns
	Dir   string

	proc     *Process
	stopOnce sync.Once
	stopErr  error
}

// StartSharedEtcd creates the anchor namespace, starts etcd on its HostIP
// and waits until etcd answers /health. On failure everything started is
// torn down. ctx bounds start-up only; stop it with [SharedEtcd.Stop]
// after the members using it.
func StartSharedEtcd(ctx context.Context, cfg SharedEtcdConfig) (_ *SharedEtcd, err error) {
	if !validMemberName(cfg.Name) {
		return nil, fmt.Errorf("shared etcd: invalid name %q", cfg.Name)
	}
	if cfg.Dir == "" {
		return nil, fmt.Errorf("shared etcd %s: empty Dir", cfg.Name)
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("shared etcd %s: %w", cfg.Name, err)
	}
	bins, err := LocateBinaries()
	if err != nil {
		return nil, fmt.Errorf("shared etcd %s: %w", cfg.Name, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("shared etcd %s: %w", cfg.Name, err)
	}
	ns, err := NewNetns(NetnsPrefix+cfg.Name, cfg.Index)
	if err != nil {
		return nil, fmt.Errorf("shared etcd %s: %w", cfg.Name, err)
	}
	e := &SharedEtcd{
		URL:   fmt.Sprintf("http://%s:%d", ns.HostIP, SharedEtcdPort),
		Netns: ns,
		Dir:   dir,
	}
	defer func() {
		if err != nil {
			_ = e.Stop()
			err = fmt.Errorf("shared etcd %s: %w", cfg.Name, err)
		}
	}()
	peer := fmt.Sprintf("http://%s:%d", ns.HostIP, SharedEtcdPort+1)
	args := etcdArgs(cfg.Name, filepath.Join(dir, "data"), e.URL, peer)
	// Pdeathsig in Start: the process dies with the test binary.
	if e.proc, err = Start(ctx, "etcd", dir, exec.Command(bins.Etcd, args...)); err != nil {
		return nil, err
	}
	if err := e.waitHealthy(ctx); err != nil {
		return nil, err
	}
	return e, nil
}

// Prefix is the --etcd-prefix a member named name uses in e: distinct per
// member, and no member's prefix is a prefix of another's.
func (e *SharedEtcd) Prefix(name string) string { return "/members/" + name + "/registry" }

// waitHealthy polls etcd's /health until it reports healthy.
func (e *SharedEtcd) waitHealthy(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, ReadyTimeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.URL+"/health", nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = errors.New(resp.Status)
		}
		last = err
		select {
		case <-e.proc.Exited():
			return fmt.Errorf("etcd exited during start-up: %v\n%s", e.proc.Err(), e.proc.Tail(20))
		case <-ctx.Done():
			return fmt.Errorf("etcd not healthy: %w (last: %v)\n%s", ctx.Err(), last, e.proc.Tail(20))
		case <-time.After(readyPollInterval):
		}
	}
}

// Process is the etcd process (for its PID and log).
func (e *SharedEtcd) Process() *Process { return e.proc }

// Stop stops etcd (SIGTERM, then SIGKILL) and deletes the anchor
// namespace. Data and log stay in Dir. Idempotent.
func (e *SharedEtcd) Stop() error {
	e.stopOnce.Do(func() {
		if e.proc != nil {
			e.proc.Stop()
		}
		e.stopErr = e.Netns.Close()
	})
	return e.stopErr
}

// etcdArgs are the flags of a single-node etcd named name, keeping its data
// in dataDir and serving clients on clientURL and peers on peerURL.
func etcdArgs(name, dataDir, clientURL, peerURL string) []string {
	return []string{
		"--name=" + name,
		"--data-dir=" + dataDir,
		"--listen-client-urls=" + clientURL,
		"--advertise-client-urls=" + clientURL,
		"--listen-peer-urls=" + peerURL,
		"--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=" + name + "=" + peerURL,
		"--initial-cluster-state=new",
		fmt.Sprintf("--quota-backend-bytes=%d", etcdQuotaBytes),
		"--logger=zap",
		"--log-outputs=stderr",
	}
}
