package ha

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"backhaul.io/backhaul/test/harness"
)

// The streams fixture: a test kubelet in the first member, its Node, a
// Pod bound to it, and an echo server on the node for port-forward.
const (
	streamsNS   = "ha-streams"
	streamsPod  = "ha-pod"
	streamsNode = "ha-node"
	streamsIP   = "10.252.80.1"
	echoPort    = 7000
)

type streamsFixture struct {
	cluster string
	kubelet *harness.Kubelet
}

func (e *environment) setupStreams(ctx context.Context, cl *harness.Cleanups, kubeletBin string) (*streamsFixture, error) {
	cluster := memberNames[0]
	m := e.members[cluster]
	if out, err := m.Netns.Command(ctx, "ip", "addr", "add", streamsIP+"/32", "dev", "lo").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("node address: %w: %s", err, out)
	}
	k, err := harness.StartKubelet(ctx, kubeletBin, m.Netns, m.CA, m.CAFile, streamsNode, streamsIP, filepath.Join(m.Dir, "kubelet"))
	if err != nil {
		return nil, err
	}
	cl.Add(k.Proc.Stop)
	cmd := m.Netns.Command(context.Background(), os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envEcho+"=127.0.0.1:"+strconv.Itoa(echoPort))
	echo, err := harness.Start(ctx, "echo", m.Dir, cmd)
	if err != nil {
		return nil, err
	}
	cl.Add(echo.Stop)
	if err := m.RegisterNode(ctx, k); err != nil {
		return nil, err
	}
	if err := m.RunningPod(ctx, streamsNS, streamsPod, streamsNode, []string{"app"}, ""); err != nil {
		return nil, err
	}
	return &streamsFixture{cluster: cluster, kubelet: k}, nil
}

// streamEnd is one end of a stream's kubectl.
type streamEnd struct {
	at     time.Time
	err    string // kubectl's exit
	stderr string // its last lines
}

// stream is a long-lived kubectl exec or port-forward to the fixture's
// pod, checked every 500 ms: a line echoed back by the exec'd shell, or a
// connection through the forwarded port to the echo server. With restart
// set, a kubectl that ends is started again after a second (through the
// virtual IP: a replica chosen afresh).
type stream struct {
	e          *environment
	kind       string // exec or port-forward
	via        string // "vip" or the replica it is pinned to
	kubeconfig string
	restart    bool

	mu       sync.Mutex
	starts   int
	ready    int       // kubectls that carried a first check
	lastOK   time.Time // last successful check
	checks   int
	failures []string // failed checks and failed starts, with times
	ends     []streamEnd
	cancel   context.CancelFunc
	done     chan struct{}
}

func (e *environment) startStream(t *testing.T, kind, via, kubeconfig string, restart bool) *stream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &stream{e: e, kind: kind, via: via, kubeconfig: kubeconfig, restart: restart, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			s.runOnce(ctx)
			if !s.restart || ctx.Err() != nil {
				return
			}
			sleep(ctx, time.Second)
			if ctx.Err() != nil {
				return
			}
		}
	}()
	t.Cleanup(s.stop)
	return s
}

// stop ends the stream's kubectl (by its process group) and the loop.
func (s *stream) stop() {
	s.cancel()
	<-s.done
}

// waitReady waits until the stream carried a check.
func (s *stream) waitReady(ctx context.Context) error {
	return harness.WaitFor(ctx, time.Minute, 100*time.Millisecond, func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.ready == 0 {
			return fmt.Errorf("%s via %s not carrying yet (failures %v, ends %d)", s.kind, s.via, head(s.failures, 3), len(s.ends))
		}
		return nil
	})
}

func (s *stream) failf(format string, args ...any) {
	s.mu.Lock()
	s.failures = append(s.failures, time.Now().Format("15:04:05.000")+" "+fmt.Sprintf(format, args...))
	s.mu.Unlock()
}

func (s *stream) checked(first bool) {
	s.mu.Lock()
	s.checks++
	s.lastOK = time.Now()
	if first {
		s.ready++
	}
	s.mu.Unlock()
}

// runOnce runs one kubectl until it ends or ctx does.
func (s *stream) runOnce(ctx context.Context) {
	args := []string{"--kubeconfig", s.kubeconfig, "--context", s.e.streams.cluster, "-n", streamsNS,
		"--cache-dir", filepath.Join(s.e.dir, "kubectl-cache")}
	local := 0
	switch s.kind {
	case "exec":
		args = append(args, "exec", "-i", streamsPod, "-c", "app", "--", "sh", "-c", `echo ready; while read l; do echo "echo:$l"; done`)
	case "port-forward":
		var err error
		if local, err = harness.FreePort(); err != nil {
			s.failf("free port: %v", err)
			return
		}
		args = append(args, "port-forward", "--address", "127.0.0.1", "pod/"+streamsPod, fmt.Sprintf("%d:%d", local, echoPort))
	}
	cmd := exec.Command(s.e.bins.Kubectl, args...)
	// Its own process group, killed with the test binary; stopped by PID.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		s.failf("stdin: %v", err)
		return
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		s.failf("stdout: %v", err)
		return
	}
	var stderr harness.LockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		s.failf("start kubectl: %v", err)
		return
	}
	s.mu.Lock()
	s.starts++
	s.mu.Unlock()
	exited := make(chan error, 1)
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	go func() {
		// Wait closes stdout once kubectl is gone; the scanner drains it.
		exited <- cmd.Wait()
	}()
	kill := func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
	checkCtx, stopChecks := context.WithCancel(ctx)
	checksDone := make(chan struct{})
	go func() {
		defer close(checksDone)
		switch s.kind {
		case "exec":
			s.checkExec(checkCtx, stdin, lines)
		case "port-forward":
			s.checkForward(checkCtx, local, lines)
		}
	}()
	select {
	case <-ctx.Done():
		stopChecks()
		<-checksDone
		kill()
	case err := <-exited:
		stopChecks()
		<-checksDone
		s.mu.Lock()
		s.ends = append(s.ends, streamEnd{at: time.Now(), err: fmt.Sprint(err), stderr: truncate(lastLines(stderr.String(), 3), 400)})
		s.mu.Unlock()
	}
	_ = stdin.Close()
	go func() { // whatever kubectl wrote last, so the scanner can end
		for range lines {
		}
	}()
}

// checkExec writes a line every 500 ms and wants it echoed back.
func (s *stream) checkExec(ctx context.Context, stdin io.Writer, lines <-chan string) {
	if !waitLine(ctx, lines, "ready", 30*time.Second) {
		if ctx.Err() == nil {
			s.failf("exec never started")
		}
		return
	}
	first := true
	for n := 1; ctx.Err() == nil; n++ {
		if _, err := fmt.Fprintf(stdin, "%d\n", n); err != nil {
			return // kubectl is going; its end is recorded
		}
		if !waitLine(ctx, lines, fmt.Sprintf("echo:%d", n), 5*time.Second) {
			if ctx.Err() == nil {
				s.failf("exec: line %d not echoed within 5s", n)
			}
			return
		}
		s.checked(first)
		first = false
		sleep(ctx, 500*time.Millisecond)
	}
}

// checkForward opens a connection through the forwarded port every 500 ms
// and wants 64 random bytes back.
func (s *stream) checkForward(ctx context.Context, local int, lines <-chan string) {
	if !waitLine(ctx, lines, "Forwarding from", 30*time.Second) {
		if ctx.Err() == nil {
			s.failf("port-forward never listened")
		}
		return
	}
	go func() { // keep draining kubectl's "Handling connection" lines
		for range lines {
		}
	}()
	addr := fmt.Sprintf("127.0.0.1:%d", local)
	first := true
	for ctx.Err() == nil {
		if err := echoOnce(addr); err != nil {
			if ctx.Err() == nil {
				s.failf("port-forward: %v", err)
			}
		} else {
			s.checked(first)
			first = false
		}
		sleep(ctx, 500*time.Millisecond)
	}
}

func echoOnce(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	msg := make([]byte, 64)
	_, _ = rand.Read(msg)
	if _, err := c.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return errors.New("echo mismatch")
	}
	return nil
}

// waitLine reads lines until one starts with want.
func waitLine(ctx context.Context, lines <-chan string, want string, timeout time.Duration) bool {
	deadline := time.After(timeout)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				return false
			}
			if strings.HasPrefix(l, want) {
				return true
			}
		case <-deadline:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

func lastLines(s string, n int) string {
	ls := strings.Split(strings.TrimSpace(s), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, " | ")
}

// streamFigures are what happened to a stream.
type streamFigures struct {
	starts, checks int
	failures       []string
	ends           []streamEnd
	lastOK         time.Time
}

func (s *stream) figures() streamFigures {
	s.mu.Lock()
	defer s.mu.Unlock()
	return streamFigures{starts: s.starts, checks: s.checks, failures: append([]string(nil), s.failures...),
		ends: append([]streamEnd(nil), s.ends...), lastOK: s.lastOK}
}

// report logs a stream's figures, with the times of its ends relative to
// since.
func (s *stream) report(t *testing.T, scenario string, since time.Time) {
	t.Helper()
	f := s.figures()
	haLine(t, scenario, "stream", s.kind, "via", s.via, "kubectl_starts", f.starts, "checks_ok", f.checks,
		"check_failures", len(f.failures), "ends", len(f.ends))
	for _, end := range f.ends {
		t.Logf("%s via %s ended at %+dms: %s; stderr: %s", s.kind, s.via, ms(end.at.Sub(since)), end.err, end.stderr)
	}
	for _, fl := range f.failures {
		t.Logf("%s via %s: %s", s.kind, s.via, fl)
	}
}
