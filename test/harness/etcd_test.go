package harness

import (
	"context"
	"net"
	"net/url"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Subnet indexes of TestSharedEtcdMembers: the anchor and two members.
const (
	selfTestEtcdIndex    = 196
	selfTestSharedIndex0 = 197
)

// TestSharedEtcdMembers: two members on one etcd, each in its own
// firewalled namespace, keep their objects apart, and the member's own
// Stop leaves the shared etcd serving the other.
func TestSharedEtcdMembers(t *testing.T) {
	requireNetAdmin(t)
	requireBinaries(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	dir := t.TempDir()

	etcd, err := StartSharedEtcd(ctx, SharedEtcdConfig{Name: "selftest-etcd", Index: selfTestEtcdIndex, Dir: filepath.Join(dir, "etcd")})
	require.NoError(t, err)
	t.Cleanup(func() {
		assert.NoError(t, etcd.Stop())
		assert.NoError(t, etcd.Stop(), "Stop must be idempotent")
	})

	names := []string{"selftest-sa", "selftest-sb"}
	ms := make([]*Member, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Go(func() {
			ms[i], errs[i] = StartMember(ctx, MemberConfig{Name: n, Index: selfTestSharedIndex0 + i, Dir: filepath.Join(dir, n),
				EtcdServers: etcd.URL, EtcdPrefix: etcd.Prefix(n)})
		})
	}
	wg.Wait()
	for _, m := range ms {
		if m != nil {
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("%s logs:\n%s", m.Name, m.Logs())
				}
				assert.NoError(t, m.Stop())
			})
		}
	}
	for _, err := range errs {
		require.NoError(t, err)
	}
	a, b := ms[0], ms[1]
	t.Logf("members ready in %s and %s on %s", a.StartupTime.Round(time.Millisecond), b.StartupTime.Round(time.Millisecond), etcd.URL)

	// Each member sees only its own objects.
	_, _, err = a.Kubectl(ctx, "create", "configmap", "only-in-a", "-n", "default")
	require.NoError(t, err)
	_, _, err = b.Kubectl(ctx, "get", "configmap", "only-in-a", "-n", "default")
	require.Error(t, err, "b must not see a's ConfigMap")
	out, _, err := a.Kubectl(ctx, "get", "configmap", "only-in-a", "-n", "default", "-o", "name")
	require.NoError(t, err)
	assert.Equal(t, "configmap/only-in-a\n", out)

	// The members stay firewalled: the root namespace cannot dial in.
	u, err := url.Parse(a.ExternalURL)
	require.NoError(t, err)
	if c, err := net.DialTimeout("tcp", u.Host, 2*time.Second); err == nil {
		c.Close()
		t.Fatalf("dial %s from the root namespace succeeded; want it dropped", u.Host)
	}

	// Stopping one member leaves the etcd to the other.
	require.NoError(t, a.Stop())
	_, _, err = b.Kubectl(ctx, "create", "configmap", "after-a-stopped", "-n", "default")
	require.NoError(t, err)
	select {
	case <-etcd.Process().Exited():
		t.Fatalf("shared etcd exited: %v", etcd.Process().Err())
	default:
	}
}
