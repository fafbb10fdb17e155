package frontend

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"k8s.io/apimachinery/pkg/util/validation"

	"backhaul.io/backhaul/hub/auth"
)

// SocketSuffix ends the name of each cluster's CONNECT socket:
// DIR/CLUSTER.sock.
const SocketSuffix = ".sock"

// maxSocketPath is the longest path a Unix socket can be bound to on
// Linux (sun_path holds 108 bytes with the terminating NUL).
const maxSocketPath = 107

// ClusterNames lists the clusters that exist now (fleet.Clusters,
// auth.AgentTokens).
type ClusterNames interface {
	Names() []string
}

// ClusterSocketsConfig is what ClusterSockets needs.
type ClusterSocketsConfig struct {
	// Dir holds one socket per cluster, DIR/CLUSTER.sock. It is created
	// (0750) if missing; who may connect is who may enter it.
	Dir string
	// User is the identity of every caller, as on the shared socket.
	User *auth.User
	// Clusters says which clusters exist; Resync is how often it is
	// asked (an in-memory list: clusters come and go rarely, and neither
	// registry can notify of additions).
	Clusters ClusterNames
	Resync   time.Duration
	// Server builds the HTTP server of each socket.
	Server func(http.Handler) *http.Server
	Log    hclog.Logger
}

// ClusterSockets serves CONNECT on one Unix socket per cluster, for
// kube-apiserver egress selectors: they send a node's IP:PORT and cannot
// name a cluster, so the socket names it (ForClusterSocket). Sockets
// appear and go as clusters do.
type ClusterSockets struct {
	cfg     ClusterSocketsConfig
	connect *Connect

	mu     sync.Mutex
	served map[string]*clusterSocket
	// failed are clusters whose socket could not be made, so the failure
	// is logged once, not every Resync.
	failed map[string]bool
	wg     sync.WaitGroup
}

type clusterSocket struct {
	path string
	srv  *http.Server
}

// Sockets returns the per-cluster sockets over p, making their directory;
// Run serves them.
func (p *Connect) Sockets(cfg ClusterSocketsConfig) (*ClusterSockets, error) {
	if cfg.Dir == "" || cfg.User == nil || cfg.Clusters == nil || cfg.Server == nil || cfg.Log == nil {
		return nil, errors.New("connect sockets: Dir, User, Clusters, Server and Log are required")
	}
	if cfg.Resync <= 0 {
		return nil, fmt.Errorf("connect sockets: resync %v must be positive", cfg.Resync)
	}
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("connect socket dir: %w", err)
	}
	return &ClusterSockets{cfg: cfg, connect: p, served: map[string]*clusterSocket{}, failed: map[string]bool{}}, nil
}

// Path is where cluster's socket is (whether or not it is served).
func (cs *ClusterSockets) Path(cluster string) string {
	return filepath.Join(cs.cfg.Dir, cluster+SocketSuffix)
}

// Run removes sockets a previous run left, and keeps one socket per
// cluster until ctx ends; then it closes them all and removes their files.
func (cs *ClusterSockets) Run(ctx context.Context) error {
	cs.removeStale()
	defer cs.closeAll()
	t := time.NewTicker(cs.cfg.Resync)
	defer t.Stop()
	for {
		cs.sync(cs.cfg.Clusters.Names())
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// removeStale deletes sockets left in the directory by a hub that did not
// stop cleanly: a stale socket refuses connections, and binding over it
// fails. Only sockets are touched.
func (cs *ClusterSockets) removeStale() {
	entries, err := os.ReadDir(cs.cfg.Dir)
	if err != nil {
		cs.cfg.Log.Warn("cannot read the CONNECT socket directory", "dir", cs.cfg.Dir, "error", err)
		return
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), SocketSuffix) && e.Type()&fs.ModeSocket != 0 {
			_ = os.Remove(filepath.Join(cs.cfg.Dir, e.Name()))
		}
	}
}

// sync opens the sockets of new clusters and closes those of clusters
// that are gone.
func (cs *ClusterSockets) sync(names []string) {
	exists := make(map[string]bool, len(names))
	for _, n := range names {
		exists[n] = true
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for name, sock := range cs.served {
		if !exists[name] {
			cs.closeSocket(name, sock)
			delete(cs.served, name)
		}
	}
	for name := range cs.failed {
		if !exists[name] {
			delete(cs.failed, name)
		}
	}
	for _, name := range names {
		if cs.served[name] != nil || cs.failed[name] {
			continue
		}
		sock, err := cs.open(name)
		if err != nil {
			cs.failed[name] = true
			cs.cfg.Log.Error("cannot serve the cluster's CONNECT socket", "cluster", name, "error", err)
			continue
		}
		cs.served[name] = sock
	}
}

// open binds and serves cluster's socket. Callers hold mu.
func (cs *ClusterSockets) open(cluster string) (*clusterSocket, error) {
	// Cluster names are DNS labels or subdomains; anything else (a "/" or
	// "..") must not become a path.
	if len(validation.IsDNS1123Subdomain(cluster)) > 0 {
		return nil, fmt.Errorf("cluster name %q cannot name a socket", cluster)
	}
	path := cs.Path(cluster)
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("socket path %s is longer than the %d bytes a Unix socket path may have: choose a shorter --connect-socket-dir", path, maxSocketPath)
	}
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	// The directory's permissions decide who may connect; the socket
	// itself lets the owner and group write (connect), whatever the umask.
	if err := os.Chmod(path, 0o660); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	srv := cs.cfg.Server(cs.connect.ForClusterSocket(cs.cfg.User, cluster))
	cs.wg.Go(func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			cs.cfg.Log.Error("cluster CONNECT socket stopped", "cluster", cluster, "error", err)
		}
	})
	cs.cfg.Log.Info("serving the cluster's CONNECT socket", "cluster", cluster, "path", path)
	return &clusterSocket{path: path, srv: srv}, nil
}

// closeSocket stops serving a socket and removes it. Tunnels already
// spliced are the hub's streams, not the server's: they end with the
// cluster's sessions, which its removal closes. Callers hold mu.
func (cs *ClusterSockets) closeSocket(cluster string, sock *clusterSocket) {
	_ = sock.srv.Close()
	_ = os.Remove(sock.path)
	cs.cfg.Log.Info("closed the CONNECT socket of a cluster that is gone", "cluster", cluster, "path", sock.path)
}

// closeAll stops every socket (shutdown) and waits for their servers.
func (cs *ClusterSockets) closeAll() {
	cs.mu.Lock()
	for name, sock := range cs.served {
		_ = sock.srv.Close()
		_ = os.Remove(sock.path)
		delete(cs.served, name)
	}
	cs.mu.Unlock()
	cs.wg.Wait()
}

// Served lists the clusters whose sockets are served now, sorted.
func (cs *ClusterSockets) Served() []string {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	out := make([]string, 0, len(cs.served))
	for n := range cs.served {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}
