// Package deploy tests the kustomize bases in deploy/ and deploy/onboard.sh
// against real kube-apiservers: every object must pass the API server's
// schema, RBAC and CRD validation, the agent's RBAC must be enough and no
// broader, and onboard.sh must install, reinstall, switch modes, wait and
// uninstall as its help says.
//
// The members run etcd and kube-apiserver only (no controller manager, no
// nodes): objects are admitted and stored, pods never run, and a deleted
// namespace stays Terminating.
package deploy

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"backhaul.io/backhaul/test/harness"
)

// Members of this package; names and netns indexes are unique across the
// repository's test packages so they may run side by side.
const (
	hostMember    = "dep1" // the bases applied with kubectl -k; the agent's RBAC
	onboardMember = "dep2" // onboard.sh
)

var memberIndexes = map[string]int{hostMember: 60, onboardMember: 61}

// Where the tested files live, relative to the repository root.
const (
	hubBase            = "deploy/hub"
	agentDeployment    = "deploy/agent/overlays/deployment"
	agentDaemonSet     = "deploy/agent/overlays/daemonset"
	onboardScript      = "deploy/onboard.sh"
	agentNamespace     = "backhaul-system"
	agentName          = "backhaul-agent"
	propagatorsBinding = "backhaul:propagators"
)

type environment struct {
	root    string // repository root
	dir     string // scratch directory
	bins    harness.Binaries
	members map[string]*harness.Member
}

var (
	env      *environment
	setupErr error
	// binsOnce finds kubectl for tests that need no member.
	binsOnce sync.Once
	bins     harness.Binaries
	binsErr  error
)

func TestMain(m *testing.M) {
	os.Exit(harness.RunSuite(m, "deploy", 4*time.Minute, &env, &setupErr, setup))
}

func setup(ctx context.Context, cl *harness.Cleanups) (_ *environment, err error) {
	e := &environment{members: map[string]*harness.Member{}}
	if e.root, err = harness.RepoRoot(); err != nil {
		return nil, err
	}
	if e.bins, err = harness.LocateBinaries(); err != nil {
		return nil, fmt.Errorf("%w (run `make kube-bins deps`)", err)
	}
	if e.dir, err = os.MkdirTemp("", "backhaul-deploy-e2e-"); err != nil {
		return nil, err
	}
	cl.Add(func() {
		if os.Getenv("BACKHAUL_E2E_KEEP") == "" {
			_ = os.RemoveAll(e.dir)
		} else {
			fmt.Fprintf(os.Stderr, "deploy e2e: logs kept in %s\n", e.dir)
		}
	})

	names := []string{hostMember, onboardMember}
	cfgs := make([]harness.MemberConfig, len(names))
	for i, n := range names {
		cfgs[i] = harness.MemberConfig{Name: n, Index: memberIndexes[n], Dir: filepath.Join(e.dir, n)}
	}
	ms, err := harness.StartMembers(ctx, cl, cfgs...)
	if err != nil {
		return nil, err
	}
	for i, n := range names {
		e.members[n] = ms[i]
	}
	return e, nil
}

func requireEnv(t *testing.T) *environment {
	t.Helper()
	if env == nil {
		harness.Skip(t, "%v", setupErr)
	}
	return env
}

// kubectlBinary is the harness's kubectl, for tests that need no member.
func kubectlBinary(t *testing.T) string {
	t.Helper()
	binsOnce.Do(func() { bins, binsErr = harness.LocateBinaries() })
	if binsErr != nil {
		harness.Skip(t, "skipping: %v (run `make kube-bins deps`)", binsErr)
	}
	return bins.Kubectl
}

// repoPath is path (slash-separated, from the repository root) made absolute.
func repoPath(t *testing.T, path string) string {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, filepath.FromSlash(path))
}

func testContext(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// kubectl runs kubectl in m as admin and fails t on error.
func kubectl(t *testing.T, ctx context.Context, m *harness.Member, args ...string) string {
	t.Helper()
	out, _, err := m.Kubectl(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// exists reports whether kubectl get finds the object (args: type, name
// and flags).
func exists(t *testing.T, ctx context.Context, m *harness.Member, args ...string) bool {
	t.Helper()
	out := kubectl(t, ctx, m, append([]string{"get", "--ignore-not-found", "-o", "name"}, args...)...)
	return strings.TrimSpace(out) != ""
}

// writeFile writes data to a new file in t's temporary directory.
func writeFile(t *testing.T, name, data string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
