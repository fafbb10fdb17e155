package harness

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// OnboardConfig is one run of deploy/onboard.sh for a member.
type OnboardConfig struct {
	Member *Member
	// Script is deploy/onboard.sh; Kubectl the kubectl it runs (its folder
	// goes first on the script's PATH).
	Script, Kubectl string
	// Namespace is the agent's namespace in the member.
	Namespace string
	// Args are what `backhaulctl cluster add` printed for the script.
	Args []string
	// StartAgent starts the agent once the script has created its
	// ServiceAccount and Secret, as the Deployment's Pod would start.
	StartAgent func() error
}

// Onboard runs deploy/onboard.sh in the member's network namespace, against
// its API server, and starts the agent when the script has made what the
// agent needs (the script waits for the hub to report the cluster
// connected). It returns the script's output, also on error.
func Onboard(ctx context.Context, cfg OnboardConfig) (string, error) {
	m := cfg.Member
	script := m.Netns.Command(ctx, "sh", append(append([]string{cfg.Script}, cfg.Args...),
		"--kubeconfig", m.AdminKubeconfig, "--wait-timeout", "120s")...)
	script.Env = append(os.Environ(), "PATH="+filepath.Dir(cfg.Kubectl)+":"+os.Getenv("PATH"))
	var out LockedBuffer
	script.Stdout, script.Stderr = &out, &out
	if err := script.Start(); err != nil {
		return "", err
	}
	done := make(chan error, 1)
	go func() { done <- script.Wait() }()
	agentErr := WaitFor(ctx, 60*time.Second, 250*time.Millisecond, func() error {
		_, stderr, err := m.Kubectl(ctx, "-n", cfg.Namespace, "get", "secret/backhaul-agent", "sa/backhaul-agent")
		if err != nil {
			return fmt.Errorf("%w: %s", err, stderr)
		}
		return nil
	})
	if agentErr == nil {
		agentErr = cfg.StartAgent()
	}
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if agentErr != nil {
		return out.String(), fmt.Errorf("onboard %s: agent: %w\nonboard.sh:\n%s", m.Name, agentErr, out.String())
	}
	if err != nil {
		return out.String(), fmt.Errorf("onboard.sh for %s: %w\n%s", m.Name, err, out.String())
	}
	return out.String(), nil
}

// StartOnboardedAgent runs the member's agent as onboard.sh's Deployment would: with
// a token of ServiceAccount backhaul-agent in namespace, reading and
// writing Secret backhaul-agent, admin on 127.0.0.1:9090 in the member's
// namespace, and short backoffs for tests; extra flags are appended.
func StartOnboardedAgent(ctx context.Context, m *Member, bin, namespace, hubURL string, extra ...string) (*Process, error) {
	tok, stderr, err := m.Kubectl(ctx, "-n", namespace, "create", "token", "backhaul-agent", "--duration=2h")
	if err != nil {
		return nil, fmt.Errorf("agent token: %w: %s", err, stderr)
	}
	kc := filepath.Join(m.Dir, "agent.kubeconfig")
	if err := WriteKubeconfig(kc, m.InternalURL, m.CAPEM, strings.TrimSpace(tok)); err != nil {
		return nil, err
	}
	args := append([]string{
		"--hub-url", hubURL, "--cluster", m.Name,
		"--credentials-secret", namespace + "/backhaul-agent",
		"--kubeconfig", kc, "--admin-listen", "127.0.0.1:9090",
		"--backoff-base", "500ms", "--backoff-max", "3s",
	}, extra...)
	return Start(ctx, "agent-"+m.Name, m.Dir, m.Netns.Command(context.Background(), bin, args...))
}

// ServeEcho makes the calling process a TCP echo server on addr until its
// listener fails; a test binary runs it when re-executed as a member-side
// workload. It returns the process's exit code.
func ServeEcho(addr string) int {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return 0
		}
		go func() {
			defer c.Close()
			_, _ = io.Copy(c, c)
		}()
	}
}

// LockedBuffer is a buffer that a command may write to (stdout and stderr
// at once) while a test reads it.
type LockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
