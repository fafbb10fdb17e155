package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	selfTestNodeIndex = 188
	// envNodeChild makes the test binary start a node and wait to be
	// killed (see TestMain).
	envNodeChild = "BACKHAUL_HARNESS_NODE_CHILD"
)

// requireNode skips the test unless real nodes can run here.
func requireNode(t *testing.T) (archive string) {
	t.Helper()
	requireNetAdmin(t)
	requireBinaries(t)
	if _, err := LocateNodeBinaries(); err != nil {
		Skip(t, "skipping: %v", err)
	}
	archive = filepath.Join(t.TempDir(), "images.tar")
	if err := SaveImages(context.Background(), archive, PauseImage, "backhaul-e2e/busybox:1.35"); err != nil {
		Skip(t, "skipping: %v", err)
	}
	return archive
}

// startNodeWithPod starts a member and a node in dir and runs a Pod.
func startNodeWithPod(ctx context.Context, t testing.TB, dir, archive string) (*Member, *Node) {
	m, err := StartMember(ctx, MemberConfig{Name: "selfnode", Index: selfTestNodeIndex, Dir: filepath.Join(dir, "m"),
		APIServerArgs: []string{"--authorization-mode=Node", "--enable-admission-plugins=NodeRestriction"}})
	require.NoError(t, err)
	require.NoError(t, m.StartControlPlane(ctx))
	n, err := StartNode(ctx, NodeConfig{Name: "selfnode-n", Index: selfTestNodeIndex, Member: m,
		Dir: filepath.Join(dir, "n"), Images: []string{archive}})
	require.NoError(t, err)
	_, _, err = m.Kubectl(ctx, "run", "sleeper", "--image=backhaul-e2e/busybox:1.35", "--image-pull-policy=IfNotPresent",
		"--", "sleep", "3600")
	require.NoError(t, err)
	_, _, err = m.Kubectl(ctx, "wait", "--for=condition=Ready", "pod/sleeper", "--timeout=2m")
	require.NoError(t, err, n.Logs())
	return m, n
}

// TestMain runs the package's tests, or, re-executed by
// TestNodeStopAndCrashCleanup, the process it kills.
func TestMain(m *testing.M) {
	if dir := os.Getenv(envNodeChild); dir != "" {
		os.Exit(nodeChild(dir))
	}
	os.Exit(m.Run())
}

// nodeChild starts a node with a Pod in dir, says so, and waits to be
// killed.
func nodeChild(dir string) int {
	var t childT
	startNodeWithPod(context.Background(), &t, dir, filepath.Join(dir, "images.tar"))
	if err := os.WriteFile(filepath.Join(dir, "ready"), nil, 0o644); err != nil {
		return 1
	}
	time.Sleep(10 * time.Minute)
	return 0
}

// childT is the testing.TB of nodeChild: a failure ends the process.
type childT struct{ testing.TB }

func (childT) Helper() {}
func (childT) Errorf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}
func (childT) FailNow() { os.Exit(1) }

// leftovers lists what a node called name may have left on the machine.
func leftovers(name, dir string) []string {
	var l []string
	if pids := cgroupPIDs("/" + cgroupPrefix + name); len(pids) > 0 {
		l = append(l, "processes in the node's cgroups")
	}
	if pids := shimPIDs(filepath.Join(NodeRunDir, name)); len(pids) > 0 {
		l = append(l, "containerd shims")
	}
	for _, c := range cgroupControllers {
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", c, cgroupPrefix+name)); err == nil {
			l = append(l, "cgroup "+c)
		}
	}
	if _, err := os.Stat(filepath.Join(NodeRunDir, name)); err == nil {
		l = append(l, "run directory")
	}
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil && strings.Contains(string(b), dir) {
		l = append(l, "mounts under "+dir)
	}
	return l
}

// TestNodeStopAndCrashCleanup: a node with a running Pod leaves nothing on
// the machine once stopped; and when the process that started it is
// killed (a crashed test), its containers outlive it, and the next run's
// CleanupStale and CleanupStaleNodes remove them and everything else.
func TestNodeStopAndCrashCleanup(t *testing.T) {
	archive := requireNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	dir := t.TempDir()
	m, n := startNodeWithPod(ctx, t, filepath.Join(dir, "clean"), archive)
	assert.NotEmpty(t, leftovers(n.Name, n.Dir), "a running node's Pod is visible")
	require.NoError(t, m.Stop())
	assert.Empty(t, leftovers(n.Name, n.Dir), "after Stop")

	child := filepath.Join(dir, "crash")
	require.NoError(t, os.MkdirAll(child, 0o755))
	require.NoError(t, os.Link(archive, filepath.Join(child, "images.tar")))
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), envNodeChild+"="+child)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_, _ = CleanupStale(NetnsPrefix + "selfnode")
		_ = CleanupStaleNodes()
	})
	require.NoError(t, WaitFor(ctx, 4*time.Minute, 200*time.Millisecond, func() error {
		_, err := os.Stat(filepath.Join(child, "ready"))
		return err
	}))
	// The crash: the child and its process group (containerd, the
	// kubelet, the API server...) die at once.
	require.NoError(t, syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL))
	_ = cmd.Wait()
	nodeDir := filepath.Join(child, "n")
	require.NoError(t, WaitFor(ctx, 10*time.Second, 100*time.Millisecond, func() error {
		f, err := tryLock("node-selfnode-n") // free once the child is gone
		if err == nil {
			f.Close()
		}
		return err
	}))
	assert.Contains(t, leftovers("selfnode-n", nodeDir), "processes in the node's cgroups", "the Pod outlived the crash")

	_, err := CleanupStale(NetnsPrefix + "selfnode")
	require.NoError(t, err)
	require.NoError(t, CleanupStaleNodes())
	assert.Empty(t, leftovers("selfnode-n", nodeDir), "after the next run's cleanup")
}
