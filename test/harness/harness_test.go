package harness

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Subnet indexes used by this package's own tests; e2e suites should pick
// others (the index locks turn a clash into a clear error, not a teardown).
const (
	selfTestMemberIndex = 200
	selfTestNetnsIndex  = 199
)

// requireNetAdmin skips the test unless it can create namespaces.
func requireNetAdmin(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		Skip(t, "skipping: needs root to create network namespaces (run the e2e suite as root)")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			Skip(t, "skipping: %s not found on PATH: %v", tool, err)
		}
	}
}

// requireBinaries skips the test unless etcd, kube-apiserver and kubectl are
// available.
func requireBinaries(t *testing.T) {
	t.Helper()
	if _, err := LocateBinaries(); err != nil {
		Skip(t, "skipping: member binaries missing (build them with `make kube-bins`, or set %s / %s): %v",
			EnvBinDir, EnvEtcd, err)
	}
}

func TestMemberStartsAndIsIsolated(t *testing.T) {
	requireNetAdmin(t)
	requireBinaries(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()

	m, err := StartMember(ctx, MemberConfig{Name: "selftest", Index: selfTestMemberIndex, Dir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("member logs:\n%s", m.Logs())
		}
		assert.NoError(t, m.Stop())
		assert.NoError(t, m.Stop(), "Stop must be idempotent")
		_, err := os.Stat(netnsDir + "/" + m.Netns.Name)
		assert.ErrorIs(t, err, os.ErrNotExist, "namespace must be gone after Stop")
	})
	t.Logf("member %s ready in %s (ns %s, %s)", m.Name, m.StartupTime.Round(time.Millisecond), m.Netns.Name, m.ExternalURL)

	// The apiserver answers inside the namespace.
	out, _, err := m.Kubectl(ctx, "get", "--raw=/readyz")
	require.NoError(t, err)
	assert.Equal(t, "ok", strings.TrimSpace(out))

	// Direct writes inside the member work, as admin.
	_, _, err = m.Kubectl(ctx, "create", "configmap", "probe", "-n", "default", "--from-literal=k=v")
	require.NoError(t, err)
	out, _, err = m.Kubectl(ctx, "get", "configmap", "probe", "-n", "default", "-o", "jsonpath={.data.k}")
	require.NoError(t, err)
	assert.Equal(t, "v", out)

	// The nobody token authenticates but RBAC denies it.
	_, stderr, err := m.KubectlAs(ctx, m.NobodyToken, "get", "configmaps", "-n", "default")
	require.Error(t, err)
	assert.Contains(t, strings.ToLower(stderr), "forbidden")
	assert.Contains(t, stderr, `"nobody"`)

	// The root namespace cannot open a connection into the member: the
	// firewall silently drops the SYN, so the dial times out (not refused).
	u, err := url.Parse(m.ExternalURL)
	require.NoError(t, err)
	conn, err := net.DialTimeout("tcp", u.Host, 2*time.Second)
	if err == nil {
		conn.Close()
		t.Fatalf("dial %s from the root namespace succeeded; want it dropped by the firewall", u.Host)
	}
	var nerr net.Error
	require.ErrorAs(t, err, &nerr)
	assert.True(t, nerr.Timeout(), "dial %s: want a timeout (dropped SYN), got %v", u.Host, err)

	// The member can dial out to the root namespace (as an agent dials the hub).
	ln, err := net.Listen("tcp", net.JoinHostPort(m.Netns.HostIP.String(), "0"))
	require.NoError(t, err)
	defer ln.Close()
	accepted := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Close()
		}
		accepted <- err
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	dialCtx, dialCancel := context.WithTimeout(ctx, 10*time.Second)
	defer dialCancel()
	script := fmt.Sprintf("exec 3<>/dev/tcp/%s/%d", m.Netns.HostIP, port)
	if out, err := m.Netns.Command(dialCtx, "bash", "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("dial from inside the namespace to %s:%d: %v: %s", m.Netns.HostIP, port, err, out)
	}
	select {
	case err := <-accepted:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("listener in the root namespace saw no connection from the member")
	}

	// The apiserver can be stopped and restarted; etcd keeps the data.
	stopStart := time.Now()
	m.StopAPIServer()
	m.StopAPIServer()
	t.Logf("apiserver stopped in %s", time.Since(stopStart).Round(time.Millisecond))
	_, _, err = m.Kubectl(ctx, "get", "--raw=/readyz", "--request-timeout=2s")
	require.Error(t, err, "apiserver should be down after StopAPIServer")
	restart := time.Now()
	require.NoError(t, m.StartAPIServer(ctx))
	t.Logf("apiserver restarted in %s", time.Since(restart).Round(time.Millisecond))
	out, _, err = m.Kubectl(ctx, "get", "configmap", "probe", "-n", "default", "-o", "jsonpath={.data.k}")
	require.NoError(t, err)
	assert.Equal(t, "v", out)
}

func TestNetnsLocksAndCleanupStale(t *testing.T) {
	requireNetAdmin(t)
	const prefix = "bhe2e-selftest-ns-"
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	live, err := NewNetns(prefix+"live", selfTestNetnsIndex)
	require.NoError(t, err)
	t.Cleanup(func() {
		assert.NoError(t, live.Close())
		assert.NoError(t, live.Close(), "Close must be idempotent")
		assert.False(t, linkExists(live.HostIf), "root-side veth must be gone")
	})
	assert.Equal(t, "10.251.199.1", live.HostIP.String())
	assert.Equal(t, "10.251.199.2", live.NSIP.String())

	// A live run's name and index are protected.
	_, err = NewNetns(prefix+"live", selfTestNetnsIndex-1)
	require.ErrorIs(t, err, errLocked)
	_, err = NewNetns(prefix+"other", selfTestNetnsIndex)
	require.ErrorIs(t, err, errLocked)

	// A namespace left by a crashed run (nobody holds its lock) is removed.
	stale := prefix + "stale"
	_, err = run(ctx, nil, "ip", "netns", "add", stale)
	require.NoError(t, err)
	removed, err := CleanupStale(prefix)
	require.NoError(t, err)
	assert.Equal(t, []string{stale}, removed)
	_, err = os.Stat(netnsDir + "/" + live.Name)
	assert.NoError(t, err, "live namespace must survive CleanupStale")

	_, err = CleanupStale("")
	assert.Error(t, err)
}

func TestProcessStopKillTail(t *testing.T) {
	dir := t.TempDir()
	ctx := t.Context()

	t.Run("stop", func(t *testing.T) {
		t.Parallel()
		p, err := Start(ctx, "stop", dir, exec.Command("sh", "-c", "echo one; echo two; exec sleep 60"))
		require.NoError(t, err)
		require.Eventually(t, func() bool { return p.Tail(2) == "one\ntwo" }, 5*time.Second, 10*time.Millisecond, p.Tail(5))
		start := time.Now()
		p.Stop()
		p.Stop()
		assert.Less(t, time.Since(start), 2*time.Second, "a SIGTERM-respecting process stops promptly")
		requireClosed(t, p.Exited())
		assert.Error(t, p.Err())
	})

	t.Run("escalates to SIGKILL and kills the group", func(t *testing.T) {
		t.Parallel()
		// Ignored signals are inherited, so the background child ignores
		// SIGTERM as well.
		p, err := Start(ctx, "stubborn", dir, exec.Command("sh", "-c", `trap "" TERM; sleep 60 & echo child $!; wait`))
		require.NoError(t, err)
		var child int
		require.Eventually(t, func() bool {
			f := strings.Fields(p.Tail(1))
			if len(f) == 2 && f[0] == "child" {
				child, _ = strconv.Atoi(f[1])
			}
			return child > 0
		}, 5*time.Second, 10*time.Millisecond)
		start := time.Now()
		p.Stop()
		assert.GreaterOrEqual(t, time.Since(start), StopGracePeriod)
		requireClosed(t, p.Exited())
		require.Eventually(t, func() bool {
			return errors.Is(syscall.Kill(child, 0), syscall.ESRCH) || isZombie(child)
		}, 5*time.Second, 10*time.Millisecond, "child %d of the group must be killed", child)
	})

	t.Run("kill", func(t *testing.T) {
		t.Parallel()
		p, err := Start(ctx, "kill", dir, exec.Command("sh", "-c", `trap "" TERM; exec sleep 60`))
		require.NoError(t, err)
		assert.Positive(t, p.PID())
		start := time.Now()
		p.Kill()
		p.Stop()
		assert.Less(t, time.Since(start), 2*time.Second)
		requireClosed(t, p.Exited())
		assert.Contains(t, p.Tail(10), "=== ", "log starts with a header line")
	})
}

func requireClosed(t *testing.T, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	default:
		t.Fatal("channel not closed")
	}
}

func TestPKI(t *testing.T) {
	dir := t.TempDir()
	ca, err := NewCA(dir, "ca")
	require.NoError(t, err)
	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM(ca.CertPEM))

	certFile, _, err := ca.Serving("server", []string{"127.0.0.1", "kubernetes.default.svc"})
	require.NoError(t, err)
	cert := readCert(t, certFile)
	_, err = cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: "kubernetes.default.svc"})
	require.NoError(t, err)
	require.NoError(t, cert.VerifyHostname("127.0.0.1"))

	certFile, keyFile, err := ca.Client("client", "alice", []string{"devs"})
	require.NoError(t, err)
	cert = readCert(t, certFile)
	_, err = cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	require.NoError(t, err)
	assert.Equal(t, "alice", cert.Subject.CommonName)
	assert.Equal(t, []string{"devs"}, cert.Subject.Organization)
	st, err := os.Stat(keyFile)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	block, _ := pem.Decode(b)
	require.NotNil(t, block)
	cert, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	return cert
}

func TestTwoMembersStartConcurrently(t *testing.T) {
	requireNetAdmin(t)
	requireBinaries(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()

	cfgs := []MemberConfig{
		{Name: "selftest-a", Index: selfTestMemberIndex - 2, Dir: t.TempDir()},
		{Name: "selftest-b", Index: selfTestMemberIndex - 3, Dir: t.TempDir()},
	}
	members := make([]*Member, len(cfgs))
	errs := make([]error, len(cfgs))
	done := make(chan int)
	start := time.Now()
	for i, cfg := range cfgs {
		go func() {
			members[i], errs[i] = StartMember(ctx, cfg)
			done <- i
		}()
	}
	for range cfgs {
		<-done
	}
	for i, m := range members {
		if m != nil {
			t.Cleanup(func() { assert.NoError(t, m.Stop()) })
			t.Logf("member %s ready in %s", m.Name, m.StartupTime.Round(time.Millisecond))
		}
		require.NoError(t, errs[i])
	}
	t.Logf("both members ready after %s", time.Since(start).Round(time.Millisecond))

	// Each member is its own cluster.
	a, b := members[0], members[1]
	_, _, err := a.Kubectl(ctx, "create", "configmap", "only-in-a", "-n", "default")
	require.NoError(t, err)
	_, stderr, err := b.Kubectl(ctx, "get", "configmap", "only-in-a", "-n", "default")
	require.Error(t, err)
	assert.Contains(t, stderr, "NotFound")
	assert.NotEqual(t, a.AdminToken, b.AdminToken)
}
