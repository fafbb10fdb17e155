package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"backhaul.io/backhaul/test/harness"
)

// envEcho makes the test binary a TCP echo server on that address.
const envEcho = "BACKHAUL_E2E_ECHO"

const (
	streamsNS   = "e2e-streams"
	streamsPod  = "streams-pod"
	streamsNode = "node-1"
	streamsIP   = "10.252.3.1"
	echoPort    = "7000"
)

// streamsEnv is m1 with a test kubelet, its Node, a Pod bound to it, and
// an echo server on the node for port-forward; set up once.
var streamsEnv struct {
	once    sync.Once
	err     error
	kubelet *harness.Kubelet
}

func requireStreams(t *testing.T) (*environment, *harness.Kubelet) {
	t.Helper()
	e := requireEnv(t)
	streamsEnv.once.Do(func() { streamsEnv.kubelet, streamsEnv.err = setupStreams(e) })
	require.NoError(t, streamsEnv.err)
	return e, streamsEnv.kubelet
}

func setupStreams(e *environment) (*harness.Kubelet, error) {
	ctx := context.Background()
	m := e.members["m1"]
	bin, err := harness.TestKubeletBinary(ctx)
	if err != nil {
		return nil, err
	}
	if out, err := m.Netns.Command(ctx, "ip", "addr", "add", streamsIP+"/32", "dev", "lo").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("node address: %w: %s", err, out)
	}
	k, err := harness.StartKubelet(ctx, bin, m.Netns, m.CA, m.CAFile, streamsNode, streamsIP, filepath.Join(m.Dir, "kubelet"))
	if err != nil {
		return nil, err
	}
	e.addCleanup(k.Proc.Stop)
	cmd := m.Netns.Command(context.Background(), os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envEcho+"=127.0.0.1:"+echoPort)
	echo, err := harness.Start(ctx, "echo", m.Dir, cmd)
	if err != nil {
		return nil, err
	}
	e.addCleanup(echo.Stop)
	if err := m.RegisterNode(ctx, k); err != nil {
		return nil, err
	}
	// mallory may read pods here but not exec into them: the upgrade's own
	// authorization is what the exec test sees.
	rbac := fmt.Sprintf(`apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: pod-reader, namespace: %[1]s}
rules:
- {apiGroups: [""], resources: [pods], verbs: [get]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: mallory-pod-reader, namespace: %[1]s}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-reader}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: mallory}
`, streamsNS)
	if err := m.RunningPod(ctx, streamsNS, streamsPod, streamsNode, []string{"app", "follow", "firehose"}, rbac); err != nil {
		return nil, err
	}
	return k, nil
}

// kubectlStreams runs kubectl against m1 through the hub with extra env.
func (e *environment) kubectlStreams(ctx context.Context, env []string, stdin string, args ...string) (stdout, stderr string, err error) {
	return e.runKubectl(ctx, env, stdin, append([]string{"--context", "m1", "-n", streamsNS}, args...)...)
}

var protocols = []struct {
	name string
	env  []string
}{
	{"websocket", nil},
	{"spdy", []string{"KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false", "KUBECTL_PORT_FORWARD_WEBSOCKETS=false"}},
}

// kubectl exec through the hub: real output, stderr and exit code, with
// and without stdin, over websocket and SPDY.
func TestExecThroughHub(t *testing.T) {
	e, _ := requireStreams(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			stdout, stderr, err := e.kubectlStreams(ctx, p.env, "", "exec", streamsPod, "-c", "app", "--", "sh", "-c", "echo out; echo err >&2; exit 7")
			var ee *exec.ExitError
			require.ErrorAs(t, err, &ee, "stdout %q stderr %q", stdout, stderr)
			assert.Equal(t, 7, ee.ExitCode(), stderr)
			assert.Equal(t, "out\n", stdout)
			assert.Contains(t, stderr, "err\n")

			// Impersonation holds for upgrades: the member's RBAC refuses
			// a caller it grants nothing.
			_, stderr, err = e.kubectlStreams(ctx, p.env, "", "--token", callers["mallory"].Token, "exec", streamsPod, "-c", "app", "--", "true")
			require.Error(t, err)
			assert.Contains(t, stderr, `User "mallory"`)
			assert.Contains(t, stderr, "pods/exec")

			stdout, stderr, err = e.kubectlStreams(ctx, p.env, "hello through the tunnel\n", "exec", "-i", streamsPod, "-c", "app", "--", "tr", "a-z", "A-Z")
			require.NoError(t, err, stderr)
			assert.Equal(t, "HELLO THROUGH THE TUNNEL\n", stdout)
		})
	}
}

// kubectl exec -it under a real terminal gets a terminal in the container.
func TestExecTTYThroughHub(t *testing.T) {
	e, _ := requireStreams(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := execCommand(ctx, e.bins.Kubectl, "--kubeconfig", e.kubeconfig, "--context", "m1", "-n", streamsNS,
		"exec", "-it", streamsPod, "-c", "app", "--", "sh", "-c", "tty; echo size $(stty size)")
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 33, Cols: 101})
	require.NoError(t, err)
	defer f.Close()
	out, _ := io.ReadAll(f) // ends with EIO when kubectl exits
	require.NoError(t, cmd.Wait(), string(out))
	assert.Contains(t, string(out), "/dev/pts/")
	assert.Contains(t, string(out), "size 33 101", "the terminal size crossed the tunnel")
}

// kubectl attach joins the container's running process.
func TestAttachThroughHub(t *testing.T) {
	e, _ := requireStreams(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stdout, stderr, err := e.kubectlStreams(ctx, nil, "ping\n", "attach", "-i", streamsPod, "-c", "app")
	require.NoError(t, err, stderr)
	assert.Contains(t, stdout, "attached: ping")
}

// kubectl logs -f streams lines as they are written.
func TestLogsFollowThroughHub(t *testing.T) {
	e, k := requireStreams(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	logFile := filepath.Join(k.LogDir, fmt.Sprintf("%s_%s_%s.log", streamsNS, streamsPod, "follow"))
	require.NoError(t, os.WriteFile(logFile, []byte("line 0\n"), 0o644))
	cmd := execCommand(ctx, e.bins.Kubectl, "--kubeconfig", e.kubeconfig, "--context", "m1", "-n", streamsNS, "logs", "-f", streamsPod, "-c", "follow")
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	lines := bufio.NewScanner(out)
	f, err := os.OpenFile(logFile, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	defer f.Close()
	for i := range 4 {
		if i > 0 {
			_, err := fmt.Fprintf(f, "line %d\n", i)
			require.NoError(t, err)
		}
		got := make(chan string, 1)
		go func() {
			if lines.Scan() {
				got <- lines.Text()
			}
			close(got)
		}()
		select {
		case l, ok := <-got:
			require.True(t, ok, "kubectl logs -f ended: %v", lines.Err())
			assert.Equal(t, fmt.Sprintf("line %d", i), l)
		case <-time.After(10 * time.Second):
			t.Fatalf("line %d did not arrive", i)
		}
	}
}

// kubectl port-forward carries 100 MiB to a server in the member and back,
// over several connections at once, with matching checksums.
func TestPortForwardThroughHub(t *testing.T) {
	e, _ := requireStreams(t)
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			local, err := harness.FreePort()
			require.NoError(t, err)
			cmd := execCommand(ctx, e.bins.Kubectl, "--kubeconfig", e.kubeconfig, "--context", "m1", "-n", streamsNS,
				"port-forward", "pod/"+streamsPod, fmt.Sprintf("%d:%s", local, echoPort))
			cmd.Env = append(cmd.Env, p.env...)
			var logs bytes.Buffer
			cmd.Stdout, cmd.Stderr = &logs, &logs
			require.NoError(t, cmd.Start())
			defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
			addr := fmt.Sprintf("127.0.0.1:%d", local)
			require.NoError(t, harness.WaitFor(ctx, 20*time.Second, 100*time.Millisecond, func() error {
				c, err := net.Dial("tcp", addr)
				if err == nil {
					c.Close()
				}
				return err
			}), logs.String())

			const conns, per = 4, 25 << 20 // 100 MiB in all
			errs := make(chan error, conns)
			for range conns {
				go func() { errs <- echoRoundTrip(addr, per) }()
			}
			for range conns {
				require.NoError(t, <-errs, logs.String())
			}
		})
	}
}

func echoRoundTrip(addr string, n int) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Minute))
	data := make([]byte, n)
	_, _ = rand.Read(data)
	want := sha256.Sum256(data)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		werr <- err
	}()
	h := sha256.New()
	if _, err := io.CopyN(h, c, int64(n)); err != nil {
		return fmt.Errorf("read back: %w", err)
	}
	if err := <-werr; err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if got := h.Sum(nil); !bytes.Equal(got, want[:]) {
		return fmt.Errorf("checksum mismatch after %d bytes", n)
	}
	return nil
}
