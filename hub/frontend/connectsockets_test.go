package frontend

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"backhaul.io/backhaul/hub/auth"
	"backhaul.io/backhaul/hub/internal/hubtest"
	"backhaul.io/backhaul/hub/session"
	"backhaul.io/backhaul/pkg/testutil"
)

// names is a cluster list a test changes.
type names struct {
	mu sync.Mutex
	l  []string
}

func (n *names) Names() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.l...)
}

func (n *names) set(l ...string) {
	n.mu.Lock()
	n.l = l
	n.mu.Unlock()
}

// socketConnect sends CONNECT target on the Unix socket at path and
// returns the status line and the first line the agent sent.
func socketConnect(t *testing.T, path, target string) (status, first string) {
	t.Helper()
	c, err := net.Dial("unix", path)
	require.NoError(t, err)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(hubtest.WaitBound))
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	require.NoError(t, err)
	status = fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimPrefix(resp.Status, fmt.Sprint(resp.StatusCode)+" "))
	if resp.StatusCode == http.StatusOK {
		first, _ = br.ReadString('\n')
	}
	return status, first
}

// Each cluster that exists gets a socket on which a bare node address is
// that cluster's; sockets come and go with clusters, a stale socket of an
// earlier run is replaced, and shutdown removes them all.
func TestClusterSocketsFollowClusters(t *testing.T) {
	f := newFrontEnds(t, auth.AllowAuthenticated{}, "site-a", "site-b")
	ip := netip.MustParseAddr("10.0.0.5")
	f.agent(t, "site-a", siteAgent("site-a"), session.Agent{Addresses: []netip.Addr{ip}})
	f.agent(t, "site-b", siteAgent("site-b"), session.Agent{Addresses: []netip.Addr{ip}})
	dir := filepath.Join(t.TempDir(), "sockets")
	require.NoError(t, os.MkdirAll(dir, 0o750))
	// A socket a crashed hub left behind, and a file that is not ours.
	stale, err := net.Listen("unix", filepath.Join(dir, "gone.sock"))
	require.NoError(t, err)
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	require.NoError(t, stale.Close())
	require.NoError(t, os.WriteFile(filepath.Join(dir, "notes.txt"), nil, 0o600))

	clusters := &names{}
	clusters.set("site-a")
	log := testutil.Logger(t)
	cs, err := f.connect.Sockets(ClusterSocketsConfig{
		Dir: dir, User: &auth.User{Name: "system:egress"}, Clusters: clusters, Resync: time.Hour,
		Server: func(h http.Handler) *http.Server {
			return &http.Server{Handler: h, ReadHeaderTimeout: hubtest.WaitBound}
		},
		Log: log,
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- cs.Run(ctx) }()
	require.Eventually(t, func() bool { return len(cs.Served()) == 1 }, hubtest.WaitBound, 10*time.Millisecond)

	_, err = os.Stat(filepath.Join(dir, "gone.sock"))
	assert.ErrorIs(t, err, os.ErrNotExist, "the stale socket is removed")
	_, err = os.Stat(filepath.Join(dir, "notes.txt"))
	assert.NoError(t, err, "what is not a socket is left alone")
	fi, err := os.Stat(cs.Path("site-a"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o660), fi.Mode().Perm())

	status, first := socketConnect(t, cs.Path("site-a"), "10.0.0.5:10250")
	require.Equal(t, "200 Connection established", status)
	assert.Equal(t, "site-a tcp 10.0.0.5:10250\n", first)

	// Clusters come and go (sync is what Run does every Resync).
	clusters.set("site-b", "bad/name")
	cs.sync(clusters.Names())
	assert.Equal(t, []string{"site-b"}, cs.Served(), "a name that cannot be a file is not served")
	_, err = os.Stat(cs.Path("site-a"))
	assert.ErrorIs(t, err, os.ErrNotExist, "a removed cluster's socket is removed")
	status, first = socketConnect(t, cs.Path("site-b"), "10.0.0.5:10250")
	require.Equal(t, "200 Connection established", status)
	assert.Equal(t, "site-b tcp 10.0.0.5:10250\n", first)
	status, _ = socketConnect(t, cs.Path("site-b"), "site-a.cluster.backhaul:443")
	assert.True(t, strings.HasPrefix(status, "403 "), status)

	cancel()
	require.NoError(t, <-done)
	_, err = os.Stat(cs.Path("site-b"))
	assert.ErrorIs(t, err, os.ErrNotExist, "shutdown removes the sockets")
	assert.Empty(t, cs.Served())
}

func TestClusterSocketsRefuseLongPaths(t *testing.T) {
	f := newFrontEnds(t, auth.AllowAuthenticated{})
	cs, err := f.connect.Sockets(ClusterSocketsConfig{
		Dir: "/" + strings.Repeat("d", 100), User: &auth.User{Name: "u"}, Clusters: &names{}, Resync: time.Hour,
		Server: func(h http.Handler) *http.Server { return &http.Server{Handler: h} }, Log: testutil.Logger(t),
	})
	require.NoError(t, err)
	_, err = cs.open("edge-1")
	require.ErrorContains(t, err, "choose a shorter --connect-socket-dir")
	_, err = f.connect.Sockets(ClusterSocketsConfig{Dir: "/x"})
	require.Error(t, err)
}
