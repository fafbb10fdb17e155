package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"backhaul.io/backhaul/test/harness"
)

// One tunnel, four `kubectl logs -f` running flat out and a port-forward
// stream whose reader never reads: kubectl get through the same tunnel
// still answers (liveness bound 5 s, not a timing target).
func TestFairnessUnderLoad(t *testing.T) {
	e, _ := requireStreams(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	var moved atomic.Int64
	var wg sync.WaitGroup
	defer wg.Wait()
	lctx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	for range 4 {
		cmd := execCommand(lctx, e.bins.Kubectl, "--kubeconfig", e.kubeconfig, "--context", "m1", "-n", streamsNS, "logs", "-f", streamsPod, "-c", "firehose")
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = io.Copy(countWriter{&moved}, out)
			_ = cmd.Wait()
		}()
	}

	// The stalled stream: write into a port-forward to the echo server and
	// never read what comes back, until its windows are full.
	local, err := harness.FreePort()
	require.NoError(t, err)
	pf := execCommand(lctx, e.bins.Kubectl, "--kubeconfig", e.kubeconfig, "--context", "m1", "-n", streamsNS,
		"port-forward", "pod/"+streamsPod, fmt.Sprintf("%d:%s", local, echoPort))
	require.NoError(t, pf.Start())
	wg.Add(1)
	go func() { defer wg.Done(); _ = pf.Wait() }()
	addr := fmt.Sprintf("127.0.0.1:%d", local)
	require.NoError(t, harness.WaitFor(ctx, 20*time.Second, 100*time.Millisecond, func() error {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	}))
	stalled, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer stalled.Close()
	var written atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 64<<10)
		for lctx.Err() == nil {
			_ = stalled.SetWriteDeadline(time.Now().Add(time.Second))
			n, err := stalled.Write(buf)
			written.Add(int64(n))
			if err != nil && !isTimeout(err) {
				return
			}
		}
	}()
	// Let the load build and the stalled stream back up.
	time.Sleep(3 * time.Second)

	var worst time.Duration
	for range 5 {
		start := time.Now()
		out, err := e.kubectlIn(ctx, "", "--context", "m1", "get", "namespace", streamsNS, "-o", "name", "--request-timeout=30s")
		took := time.Since(start)
		require.NoError(t, err, out)
		assert.Equal(t, "namespace/"+streamsNS, strings.TrimSpace(out))
		worst = max(worst, took)
	}
	require.Positive(t, moved.Load(), "the firehose streams are not flowing")
	t.Logf("kubectl get under load: worst %s; firehose moved %d MiB so far; stalled stream accepted %d MiB and stopped",
		worst.Round(time.Millisecond), moved.Load()>>20, written.Load()>>20)
	assert.Less(t, worst, 5*time.Second, "kubectl get starved by other streams on the tunnel")
	stopLoad()
}

type countWriter struct{ n *atomic.Int64 }

func (c countWriter) Write(p []byte) (int, error) {
	c.n.Add(int64(len(p)))
	return len(p), nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// After 200 exec sessions open and close, hub and agent goroutines and file
// descriptors return to their baseline.
func TestExecSessionsDoNotLeak(t *testing.T) {
	e, _ := requireStreams(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	m := e.members["m1"]
	hubPID, agentPID := e.hub.Process().PID(), e.agent("m1").PID()

	run := func(n int) {
		var wg sync.WaitGroup
		sem := make(chan struct{}, 8)
		errs := make(chan error, n)
		for i := range n {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				out, _, err := e.kubectlStreams(ctx, nil, "", "exec", streamsPod, "-c", "app", "--", "echo", strconv.Itoa(i))
				if err != nil || strings.TrimSpace(out) != strconv.Itoa(i) {
					errs <- fmt.Errorf("exec %d: %v %q", i, err, out)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
	}
	counts := func() (hubG, hubFD, agentG, agentFD int) {
		return e.hubGoroutines(t), fdCount(t, hubPID), agentGoroutines(t, m), fdCount(t, agentPID)
	}

	run(16) // warm pools and caches to their steady state
	time.Sleep(time.Second)
	hg0, hf0, ag0, af0 := counts()
	run(200)
	var hg, hf, ag, af int
	err := harness.WaitFor(ctx, 30*time.Second, 500*time.Millisecond, func() error {
		hg, hf, ag, af = counts()
		// A few goroutines of slack for pooled idle streams and timers.
		if hg > hg0+10 || hf > hf0+5 || ag > ag0+10 || af > af0+5 {
			return fmt.Errorf("not back to baseline")
		}
		return nil
	})
	t.Logf("hub goroutines %d -> %d, fds %d -> %d; agent goroutines %d -> %d, fds %d -> %d", hg0, hg, hf0, hf, ag0, ag, af0, af)
	require.NoError(t, err)
}

func fdCount(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(pid), "fd"))
	require.NoError(t, err)
	return len(ents)
}

func (e *environment) hubGoroutines(t *testing.T) int {
	return int(e.hubCounter(t, "go_goroutines"))
}

// agentGoroutines reads go_goroutines from the agent's admin port, which
// listens inside the member's namespace.
func agentGoroutines(t *testing.T, m *harness.Member) int {
	t.Helper()
	out, err := m.Netns.Command(context.Background(), "bash", "-c",
		`exec 3<>/dev/tcp/127.0.0.1/`+strconv.Itoa(agentAdminPort)+`; printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3; cat <&3`).Output()
	require.NoError(t, err)
	for _, l := range bytes.Split(out, []byte("\n")) {
		if v, ok := strings.CutPrefix(string(l), "go_goroutines "); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			require.NoError(t, err)
			return n
		}
	}
	t.Fatalf("no go_goroutines in the agent's metrics")
	return 0
}
