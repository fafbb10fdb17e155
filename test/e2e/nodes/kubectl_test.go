package nodes

// kubectl's streaming verbs (exec, attach, logs -f, port-forward, cp,
// debug) run by the real kubectl in the root namespace, through the
// hub's gateway only, against real containers on e.m1's node: the
// member's kube-apiserver proxies them to its kubelet, which reaches
// containerd and runc. Each test has a namespace of its own in e.m1.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"backhaul.io/backhaul/test/harness"
)

// kubectlProtocols are kubectl's two ways of carrying exec, attach and
// port-forward: websockets (its default) and SPDY (what it falls back
// to, forced here by its switches). Both must cross the hub.
var kubectlProtocols = []struct {
	name string
	env  []string
}{
	{"websocket", nil},
	{"spdy", []string{"KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false", "KUBECTL_PORT_FORWARD_WEBSOCKETS=false"}},
}

// What kubectl -v=4 logs when it streams over a websocket: for exec and
// attach (client-go tools/remotecommand), for port-forward
// (tools/portforward); and when it gave the websocket up for SPDY.
const (
	kubectlWSRemoteCommand = "Subprotocol negotiated"
	kubectlWSPortForward   = "negotiated protocol"
	kubectlFallback        = "fallback"
)

// assertKubectlProtocol checks from kubectl's -v=4 log that it used
// protocol: a websocket it kept (a hub that broke websockets would
// otherwise hide behind kubectl's fallback to SPDY), or SPDY only.
func assertKubectlProtocol(t *testing.T, protocol, log, wsLine string) {
	t.Helper()
	if protocol == "websocket" {
		assert.Contains(t, log, wsLine, "kubectl streamed over a websocket")
		assert.NotContains(t, strings.ToLower(log), kubectlFallback, "kubectl did not fall back to SPDY")
		return
	}
	assert.NotContains(t, log, wsLine, "kubectl streamed over SPDY")
}

// kubectlNamespace creates namespace NAME-suffix in e.m1 through the hub
// and deletes it (and so its Pods) when the test ends.
func (e *environment) kubectlNamespace(ctx context.Context, t *testing.T, suffix string) string {
	t.Helper()
	name := e.name("kubectl-" + suffix)
	out, err := e.kubectl(ctx, t, e.m1.Name, "create", "namespace", name)
	require.NoError(t, err, out)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if out, err := e.kubectl(ctx, t, e.m1.Name, "delete", "namespace", name, "--wait=true", "--timeout=150s"); err != nil {
			t.Errorf("delete namespace %s: %v: %s", name, err, out)
		}
	})
	return name
}

// kubectlBusybox is a container of the workload image running command.
func kubectlBusybox(name string, command ...string) corev1.Container {
	return corev1.Container{Name: name, Image: busybox, ImagePullPolicy: corev1.PullIfNotPresent, Command: command}
}

// kubectlRunPod creates a Pod of containers in namespace through the hub
// and waits until it is Ready. The Pod goes within a second when its
// namespace is deleted (sleep and sh ignore SIGTERM as PID 1).
func (e *environment) kubectlRunPod(ctx context.Context, t *testing.T, namespace, name string, containers ...corev1.Container) {
	t.Helper()
	grace := int64(1)
	pod := corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: corev1.PodSpec{
			Containers:                    containers,
			TerminationGracePeriodSeconds: &grace,
			// A scratch image has no /tmp: files go here.
			Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
		},
	}
	for i := range pod.Spec.Containers {
		pod.Spec.Containers[i].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
	}
	manifest, err := json.Marshal(pod)
	require.NoError(t, err)
	cmd := e.kubectlCmd(ctx, t, e.m1.Name, "create", "-f", "-")
	cmd.Stdin = bytes.NewReader(manifest)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, string(out))
	if out, err := e.kubectl(ctx, t, e.m1.Name, "-n", namespace, "wait", "--for=condition=Ready", "pod/"+name, "--timeout=4m"); err != nil {
		describe, _ := e.kubectl(ctx, t, e.m1.Name, "-n", namespace, "describe", "pod", name)
		t.Fatalf("pod %s/%s not Ready: %v: %s\n%s\n%s", namespace, name, err, out, describe, e.m1Node.Logs())
	}
}

// kubectlStream is kubectl through the hub to e.m1 with the environment
// switches env added (a protocol of kubectlProtocols).
func (e *environment) kubectlStream(ctx context.Context, t *testing.T, env []string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := e.kubectlCmd(ctx, t, e.m1.Name, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.WaitDelay = 10 * time.Second
	return cmd
}

// kubectlTerm is kubectl on a pseudo-terminal, as a person runs it; what
// it shows there is collected as it comes.
type kubectlTerm struct {
	cmd    *exec.Cmd
	pty    *os.File
	screen harness.LockedBuffer
	closed chan struct{} // the terminal's last reader is gone: kubectl exited

	waitOnce sync.Once
	waitErr  error
}

// startKubectlTerm starts cmd on a 33x101 terminal (its stdin and
// stdout; stderr too unless the caller set it) and stops it when the
// test ends.
func startKubectlTerm(t *testing.T, cmd *exec.Cmd) *kubectlTerm {
	t.Helper()
	k := &kubectlTerm{cmd: cmd, closed: make(chan struct{})}
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 33, Cols: 101})
	require.NoError(t, err)
	k.pty = f
	go func() {
		defer close(k.closed)
		_, _ = io.Copy(&k.screen, f) // ends with EIO when kubectl exits
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = k.wait()
		_ = f.Close()
		<-k.closed
	})
	return k
}

// wait waits for kubectl to exit, once.
func (k *kubectlTerm) wait() error {
	k.waitOnce.Do(func() { k.waitErr = k.cmd.Wait() })
	return k.waitErr
}

// typeIn types s on the terminal.
func (k *kubectlTerm) typeIn(t *testing.T, s string) {
	t.Helper()
	_, err := k.pty.Write([]byte(s))
	require.NoError(t, err)
}

// expect waits until the terminal shows want, typing input (if any)
// again every few seconds: what travels on another stream than stdin (a
// resize) may arrive after it.
func (k *kubectlTerm) expect(ctx context.Context, t *testing.T, want, input string, log fmt.Stringer) {
	t.Helper()
	last := time.Time{}
	err := harness.WaitFor(ctx, 2*time.Minute, 100*time.Millisecond, func() error {
		exited := false
		select {
		case <-k.closed:
			exited = true
		default:
		}
		if strings.Contains(k.screen.String(), want) {
			return nil
		}
		if exited {
			return harness.Permanent(errors.New("kubectl exited"))
		}
		if input != "" && time.Since(last) > 3*time.Second {
			last = time.Now()
			if _, err := k.pty.Write([]byte(input)); err != nil {
				return harness.Permanent(err)
			}
		}
		return errors.New("not shown yet")
	})
	var logText string
	if log != nil {
		logText = log.String()
	}
	require.NoError(t, err, "waiting for %q on the terminal:\n%s\nkubectl's log:\n%s", want, k.screen.String(), logText)
}

// TestKubectlExecTTY: `kubectl exec -it POD -- sh` on a terminal gets a
// shell on a terminal in the container: a typed command runs and its
// output comes back, the terminal's size and a resize reach the
// container, and `exit 3` makes kubectl exit 3; over websockets and SPDY.
func TestKubectlExecTTY(t *testing.T) {
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	namespace := e.kubectlNamespace(ctx, t, "exec-tty")
	e.kubectlRunPod(ctx, t, namespace, "shell", kubectlBusybox("main", "sleep", "86400"))

	for _, p := range kubectlProtocols {
		t.Run(p.name, func(t *testing.T) {
			var log harness.LockedBuffer
			cmd := e.kubectlStream(ctx, t, p.env, "-v=4", "-n", namespace, "exec", "-it", "shell", "-c", "main", "--", "sh")
			cmd.Stderr = &log // kubectl's own log; the shell's stderr is the terminal
			k := startKubectlTerm(t, cmd)
			k.expect(ctx, t, "# ", "", &log) // busybox sh's prompt for root

			// The typed line comes back as typed; only the shell prints 42.
			k.typeIn(t, "tty; echo size $(stty size); echo sum-$((6*7))\r")
			k.expect(ctx, t, "sum-42", "", &log)
			assert.Regexp(t, `/dev/pts/\d+`, k.screen.String(), "the shell has a terminal")
			assert.Contains(t, k.screen.String(), "size 33 101", "the terminal's size crossed the hub")

			require.NoError(t, pty.Setsize(k.pty, &pty.Winsize{Rows: 40, Cols: 120}))
			k.expect(ctx, t, "size 40 120", "echo size $(stty size)\r", &log)

			k.typeIn(t, "exit 3\r")
			err := k.wait()
			var ee *exec.ExitError
			require.ErrorAs(t, err, &ee, "terminal:\n%s\nlog:\n%s", k.screen.String(), log.String())
			assert.Equal(t, 3, ee.ExitCode(), "the shell's exit status is kubectl's")
			assertKubectlProtocol(t, p.name, log.String(), kubectlWSRemoteCommand)
		})
	}
}

// TestKubectlExecStdin: `kubectl exec -i` without a terminal carries
// 1 MiB of piped stdin to the container and back intact on stdout,
// stderr apart, and the command's exit status; over websockets and SPDY.
func TestKubectlExecStdin(t *testing.T) {
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	namespace := e.kubectlNamespace(ctx, t, "exec-stdin")
	e.kubectlRunPod(ctx, t, namespace, "shell", kubectlBusybox("main", "sleep", "86400"))

	for _, p := range kubectlProtocols {
		t.Run(p.name, func(t *testing.T) {
			in := make([]byte, 1<<20)
			_, _ = rand.Read(in)
			var stdout bytes.Buffer
			var stderr harness.LockedBuffer
			cmd := e.kubectlStream(ctx, t, p.env, "-v=4", "-n", namespace, "exec", "-i", "shell", "-c", "main", "--",
				"sh", "-c", "cat; echo to-stderr >&2; exit 5")
			cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(in), &stdout, &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			require.ErrorAs(t, err, &ee, stderr.String())
			assert.Equal(t, 5, ee.ExitCode(), stderr.String())
			assert.Equal(t, len(in), stdout.Len())
			assert.True(t, bytes.Equal(in, stdout.Bytes()), "stdin came back intact on stdout")
			assert.Contains(t, stderr.String(), "to-stderr\n")
			assertKubectlProtocol(t, p.name, stderr.String(), kubectlWSRemoteCommand)
		})
	}
}

// TestKubectlAttach: `kubectl attach` joins a container's running
// process: with -it, a shell started with stdin and a terminal runs what
// is typed; with -i, a reader of stdin answers each line piped to it;
// over websockets and SPDY.
func TestKubectlAttach(t *testing.T) {
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	namespace := e.kubectlNamespace(ctx, t, "attach")
	term := kubectlBusybox("tty", "sh")
	term.Stdin, term.TTY = true, true
	lines := kubectlBusybox("lines", "sh", "-c", `while read l; do echo "got: $l"; done`)
	lines.Stdin = true
	e.kubectlRunPod(ctx, t, namespace, "attach", term, lines)

	for _, p := range kubectlProtocols {
		t.Run("tty/"+p.name, func(t *testing.T) {
			var log harness.LockedBuffer
			cmd := e.kubectlStream(ctx, t, p.env, "-v=4", "-n", namespace, "attach", "-it", "attach", "-c", "tty")
			cmd.Stderr = &log
			k := startKubectlTerm(t, cmd)
			// Typed again until seen: the shell is already waiting, and
			// what is typed before the attach is up stays with kubectl.
			k.expect(ctx, t, "attached-42-"+p.name, "echo attached-$((6*7))-"+p.name+"\r", &log)
			assertKubectlProtocol(t, p.name, log.String(), kubectlWSRemoteCommand)
		})
		t.Run("stdin/"+p.name, func(t *testing.T) {
			var log harness.LockedBuffer
			cmd := e.kubectlStream(ctx, t, p.env, "-v=4", "-n", namespace, "attach", "-i", "attach", "-c", "lines")
			cmd.Stderr = &log
			stdin, err := cmd.StdinPipe()
			require.NoError(t, err)
			stdout, err := cmd.StdoutPipe()
			require.NoError(t, err)
			require.NoError(t, cmd.Start())
			t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
			got := make(chan string)
			go func() {
				defer close(got)
				sc := bufio.NewScanner(stdout)
				for sc.Scan() {
					select {
					case got <- sc.Text():
					case <-ctx.Done():
						return
					}
				}
			}()
			for i := range 3 {
				line := fmt.Sprintf("ping %d over %s", i, p.name)
				_, err := io.WriteString(stdin, line+"\n")
				require.NoError(t, err)
				select {
				case l, ok := <-got:
					require.True(t, ok, "kubectl attach ended: %s", log.String())
					assert.Equal(t, "got: "+line, l)
				case <-ctx.Done():
					t.Fatalf("no answer to %q: %s", line, log.String())
				}
			}
			assertKubectlProtocol(t, p.name, log.String(), kubectlWSRemoteCommand)
		})
	}
}

// TestKubectlLogsFollow: `kubectl logs -f` keeps streaming: a container
// prints a numbered line every 200ms, and lines written after kubectl
// started arrive one after another, none lost, until kubectl is stopped.
func TestKubectlLogsFollow(t *testing.T) {
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	namespace := e.kubectlNamespace(ctx, t, "logs")
	e.kubectlRunPod(ctx, t, namespace, "ticker",
		kubectlBusybox("tick", "sh", "-c", `i=0; while :; do echo "tick $i"; i=$((i+1)); sleep 0.2; done`))

	tickNumber := func(line string) int {
		t.Helper()
		n, err := strconv.Atoi(strings.TrimPrefix(line, "tick "))
		require.NoError(t, err, "log line %q", line)
		return n
	}
	// The last line written before kubectl logs -f starts.
	out, err := e.kubectl(ctx, t, e.m1.Name, "-n", namespace, "logs", "ticker", "-c", "tick", "--tail=1")
	require.NoError(t, err, out)
	before := tickNumber(strings.TrimSpace(out))

	var log harness.LockedBuffer
	cmd := e.kubectlStream(ctx, t, nil, "-n", namespace, "logs", "-f", "ticker", "-c", "tick", "--tail=1")
	cmd.Stderr = &log
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
	}()
	next := func() string {
		t.Helper()
		select {
		case l, ok := <-lines:
			require.True(t, ok, "kubectl logs -f ended: %s", log.String())
			return l
		case <-ctx.Done():
			t.Fatalf("no log line: %s", log.String())
			return ""
		}
	}

	// --tail=1 starts at (or just after) the line read above; then every
	// new line comes, in order, as the container writes it.
	prev := tickNumber(next())
	assert.GreaterOrEqual(t, prev, before)
	const fresh = 15
	for range fresh {
		n := tickNumber(next())
		require.Equal(t, prev+1, n, "lines arrive in order, none lost")
		prev = n
	}
	assert.Greater(t, prev, before+fresh-1, "lines written after kubectl started streamed to it")

	// kubectl still follows until it is stopped.
	require.NoError(t, cmd.Process.Kill())
	stopped = true
	err = cmd.Wait()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, "kubectl logs -f ran until killed, not to an end of its own")
}

// kubectlForwarding is port-forward's line naming the local port it
// listens on (asked for with ":PORT").
var kubectlForwarding = regexp.MustCompile(`^Forwarding from 127\.0\.0\.1:(\d+) -> 8080$`)

// TestKubectlPortForward: `kubectl port-forward` reaches a TCP server in
// a container: 1 MiB of random bytes on each of two connections at once
// comes back intact from an echo server; over websockets and SPDY.
func TestKubectlPortForward(t *testing.T) {
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	namespace := e.kubectlNamespace(ctx, t, "port-forward")
	// nc -ll: a new `cat` for every connection, and keep listening.
	echo := kubectlBusybox("echo", "nc", "-ll", "-p", "8080", "-e", "cat")
	echo.Ports = []corev1.ContainerPort{{ContainerPort: 8080}}
	echo.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8080)}}, PeriodSeconds: 1}
	e.kubectlRunPod(ctx, t, namespace, "echo", echo)

	for _, p := range kubectlProtocols {
		t.Run(p.name, func(t *testing.T) {
			var log harness.LockedBuffer
			cmd := e.kubectlStream(ctx, t, p.env, "-v=4", "-n", namespace, "port-forward", "pod/echo", ":8080")
			cmd.Stderr = &log
			stdout, err := cmd.StdoutPipe()
			require.NoError(t, err)
			require.NoError(t, cmd.Start())
			t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
			port := make(chan string, 1)
			go func() {
				defer close(port)
				sc := bufio.NewScanner(stdout)
				found := false
				for sc.Scan() { // read to the end: kubectl blocks on a full pipe
					if m := kubectlForwarding.FindStringSubmatch(sc.Text()); m != nil && !found {
						found = true
						port <- m[1]
					}
				}
			}()
			var local string
			select {
			case pt, ok := <-port:
				require.True(t, ok, "kubectl port-forward ended: %s", log.String())
				local = net.JoinHostPort("127.0.0.1", pt)
			case <-ctx.Done():
				t.Fatalf("kubectl port-forward never listened: %s", log.String())
			}

			const conns = 2
			errs := make(chan error, conns)
			for range conns {
				go func() { errs <- kubectlEcho(ctx, local, 1<<20) }()
			}
			for range conns {
				require.NoError(t, <-errs, log.String())
			}
			assertKubectlProtocol(t, p.name, log.String(), kubectlWSPortForward)
		})
	}
}

// kubectlEcho sends n random bytes to the echo server at addr while
// reading them back, and compares.
func kubectlEcho(ctx context.Context, addr string, n int) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	data := make([]byte, n)
	_, _ = rand.Read(data)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		werr <- err
	}()
	back := make([]byte, n)
	if _, err := io.ReadFull(c, back); err != nil {
		return fmt.Errorf("read back: %w", err)
	}
	if err := <-werr; err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if !bytes.Equal(data, back) {
		return errors.New("echoed bytes differ from those sent")
	}
	return nil
}

// TestKubectlCp: `kubectl cp` copies a directory into a container (the
// container's sha256sum agrees with the local files), the same directory
// back out (byte for byte the original), and a file the container wrote
// out (its sha256sum agrees with the copy).
func TestKubectlCp(t *testing.T) {
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	namespace := e.kubectlNamespace(ctx, t, "cp")
	e.kubectlRunPod(ctx, t, namespace, "files", kubectlBusybox("main", "sleep", "86400"))
	kubectl := func(args ...string) string {
		t.Helper()
		out, err := e.kubectl(ctx, t, e.m1.Name, append([]string{"-n", namespace}, args...)...)
		require.NoError(t, err, out)
		return out
	}

	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	blob := make([]byte, 300<<10)
	_, _ = rand.Read(blob)
	files := map[string][]byte{
		"hello.txt":     []byte("hello through the hub\n"),
		"sub/blob.bin":  blob,
		"sub/empty.txt": nil,
	}
	for name, b := range files {
		require.NoError(t, os.MkdirAll(filepath.Dir(filepath.Join(src, name)), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(src, name), b, 0o644))
	}

	// Local to the container.
	kubectl("cp", src, "files:/data/in", "-c", "main")
	for name, b := range files {
		sum := sha256.Sum256(b)
		out := kubectl("exec", "files", "-c", "main", "--", "sha256sum", "/data/in/"+name)
		assert.Equal(t, hex.EncodeToString(sum[:])+"  /data/in/"+name, strings.TrimSpace(out))
	}

	// And back out.
	back := filepath.Join(dir, "back")
	kubectl("cp", "files:/data/in", back, "-c", "main")
	for name, b := range files {
		got, err := os.ReadFile(filepath.Join(back, name))
		if assert.NoError(t, err) {
			assert.True(t, bytes.Equal(b, got), "%s came back as it went", name)
		}
	}

	// A file made in the container.
	out := kubectl("exec", "files", "-c", "main", "--", "sh", "-c", "head -c 500000 /dev/urandom > /data/made.bin && sha256sum /data/made.bin")
	made := filepath.Join(dir, "made.bin")
	kubectl("cp", "files:/data/made.bin", made, "-c", "main")
	b, err := os.ReadFile(made)
	require.NoError(t, err)
	assert.Len(t, b, 500000)
	sum := sha256.Sum256(b)
	assert.Equal(t, hex.EncodeToString(sum[:])+"  /data/made.bin", strings.TrimSpace(out))
}

// TestKubectlDebug: `kubectl debug --target` adds an ephemeral container
// to a running Pod (a PATCH of pods/ephemeralcontainers through the hub)
// that shares the target container's processes: run with a command, its
// `ps` shows the target's process and it ends with status 0; run with
// -it, a shell in it runs what is typed and its `exit 4` ends the
// container with status 4.
func TestKubectlDebug(t *testing.T) {
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	namespace := e.kubectlNamespace(ctx, t, "debug")
	// The target's process, told apart in ps by its argument.
	e.kubectlRunPod(ctx, t, namespace, "target", kubectlBusybox("main", "sleep", "86399"))
	debugArgs := func(container string) []string {
		return []string{"-n", namespace, "debug", "target", "-c", container, "--image=" + busybox,
			"--image-pull-policy=IfNotPresent", "--profile=general", "--target=main"}
	}
	// terminated is the exit code of ephemeral container c once it has
	// ended.
	terminated := func(c string) string {
		t.Helper()
		var code string
		err := harness.WaitFor(ctx, 3*time.Minute, time.Second, func() error {
			out, err := e.kubectl(ctx, t, e.m1.Name, "-n", namespace, "get", "pod", "target", "-o",
				fmt.Sprintf(`jsonpath={.status.ephemeralContainerStatuses[?(@.name==%q)].state.terminated.exitCode}`, c))
			if err != nil {
				return fmt.Errorf("%w: %s", err, out)
			}
			if code = strings.TrimSpace(out); code == "" {
				return fmt.Errorf("ephemeral container %s has not ended", c)
			}
			return nil
		})
		if err != nil {
			describe, _ := e.kubectl(ctx, t, e.m1.Name, "-n", namespace, "describe", "pod", "target")
			t.Fatalf("%v\n%s\n%s", err, describe, e.m1Node.Logs())
		}
		return code
	}

	t.Run("command", func(t *testing.T) {
		out, err := e.kubectl(ctx, t, e.m1.Name, append(debugArgs("probe"), "--", "sh", "-c", "ps; echo debug-$((6*7))")...)
		require.NoError(t, err, out)
		assert.Equal(t, "0", terminated("probe"))
		out, err = e.kubectl(ctx, t, e.m1.Name, "-n", namespace, "logs", "target", "-c", "probe")
		require.NoError(t, err, out)
		assert.Contains(t, out, "sleep 86399", "the debug container sees the target's processes")
		assert.Contains(t, out, "debug-42")
	})

	t.Run("interactive", func(t *testing.T) {
		cmd := e.kubectlCmd(ctx, t, e.m1.Name, append([]string{"-it"}, append(debugArgs("shell"), "--", "sh")...)...)
		k := startKubectlTerm(t, cmd)
		k.expect(ctx, t, "debug-shell-42", "ps; echo debug-shell-$((6*7))\r", nil)
		assert.Contains(t, k.screen.String(), "sleep 86399", "the debug shell sees the target's processes")
		k.typeIn(t, "exit 4\r")
		_ = k.wait() // kubectl attach ends with the container; its status is the Pod's
		assert.Equal(t, "4", terminated("shell"), "terminal:\n%s", k.screen.String())
	})

	// The target ran on, untouched.
	out, err := e.kubectl(ctx, t, e.m1.Name, "-n", namespace, "get", "pod", "target", "-o",
		"jsonpath={.status.containerStatuses[0].ready} {.status.containerStatuses[0].restartCount}")
	require.NoError(t, err, out)
	assert.Equal(t, "true 0", out)
}
