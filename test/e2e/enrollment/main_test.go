// Package enrollment plays the attacker against the hub's unauthenticated
// enrollment endpoints: a real host cluster (etcd and kube-apiserver in a
// network namespace) holds the bootstrap tokens, a real backhaul-hub
// serves /v1/enroll, and the tests read the host API server's own request
// counters to see what a flood of guessed tokens costs it.
package enrollment

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"backhaul.io/backhaul/test/harness"
)

const (
	ns = "backhaul-system"
	// hostIndex picks the host's subnet; other suites use 40-89.
	hostIndex = 90
)

// Limits the hub runs with. Rates are so slow that nothing refills during
// a test, so whether a request is allowed depends only on how many came
// before it, never on timing: every source may make sourceBurst requests,
// all sources together globalBurst.
const (
	sourceBurst = 20
	globalBurst = 100000
	limitRate   = "0.001"
)

type environment struct {
	dir            string
	bins           harness.Binaries
	ctlBin         string
	host           *harness.Member
	hostKubeconfig string
	hub            *harness.Hub
}

var (
	env      *environment
	setupErr error
)

func TestMain(m *testing.M) {
	os.Exit(harness.RunSuite(m, "enrollment", 4*time.Minute, &env, &setupErr, setup))
}

func requireEnv(t *testing.T) *environment {
	t.Helper()
	if env == nil {
		harness.Skip(t, "%v", setupErr)
	}
	return env
}

func setup(ctx context.Context, cl *harness.Cleanups) (_ *environment, err error) {
	e := &environment{}
	if _, err := harness.CleanupStale(harness.NetnsPrefix + "eh"); err != nil {
		return nil, err
	}
	root, err := harness.RepoRoot()
	if err != nil {
		return nil, err
	}
	if e.bins, err = harness.LocateBinaries(); err != nil {
		return nil, fmt.Errorf("%w (run `make kube-bins deps`)", err)
	}
	hubBin, _, err := harness.BackhaulBinaries(ctx)
	if err != nil {
		return nil, err
	}
	if e.ctlBin, err = harness.CtlBinary(ctx); err != nil {
		return nil, err
	}
	if e.dir, err = harness.SuiteDir(cl, "enroll"); err != nil {
		return nil, err
	}
	e.host, err = harness.StartMember(ctx, harness.MemberConfig{Name: "eh", Index: hostIndex, Dir: filepath.Join(e.dir, "eh")})
	if e.host != nil {
		cl.Add(func() { _ = e.host.Stop() })
	}
	if err != nil {
		return nil, err
	}
	if err := e.host.Netns.AllowInbound(harness.APIServerPort); err != nil {
		return nil, err
	}
	e.hostKubeconfig = filepath.Join(e.dir, "host.kubeconfig")
	if err := harness.WriteKubeconfig(e.hostKubeconfig, e.host.ExternalURL, e.host.CAPEM, e.host.AdminToken); err != nil {
		return nil, err
	}
	// The shipped hub base (CRDs, namespace, ServiceAccount, RBAC); the
	// hub runs as that ServiceAccount, so its RBAC must allow the token
	// cache's list and watch.
	if out, err := e.hostKubectl(ctx, "apply", "--server-side", "-k", filepath.Join(root, "deploy/hub")); err != nil {
		return nil, fmt.Errorf("apply deploy/hub: %w: %s", err, out)
	}
	if err := harness.WaitFor(ctx, 30*time.Second, 200*time.Millisecond, func() error {
		_, err := e.hostKubectl(ctx, "get", "clusters.backhaul.io")
		return err
	}); err != nil {
		return nil, err
	}
	hubToken, err := e.hostKubectl(ctx, "-n", ns, "create", "token", "backhaul-hub", "--duration=2h")
	if err != nil {
		return nil, fmt.Errorf("hub token: %w: %s", err, hubToken)
	}
	hubKubeconfig := filepath.Join(e.dir, "hub-host.kubeconfig")
	if err := harness.WriteKubeconfig(hubKubeconfig, e.host.ExternalURL, e.host.CAPEM, strings.TrimSpace(hubToken)); err != nil {
		return nil, err
	}
	port, err := harness.FreePort()
	if err != nil {
		return nil, err
	}
	hubDir := filepath.Join(e.dir, "hub")
	e.hub, err = harness.StartHub(ctx, harness.HubConfig{
		Binary: hubBin, Dir: hubDir, Port: port,
		Args: []string{
			"--registry=kube", "--kubeconfig", hubKubeconfig, "--namespace", ns,
			"--ca-cert-file", filepath.Join(hubDir, "hub-ca.crt"), "--ca-key-file", filepath.Join(hubDir, "hub-ca.key"),
			"--advertise-url", fmt.Sprintf("wss://127.0.0.1:%d", port),
			"--propagation=false",
			"--enroll-rate-per-source", limitRate, "--enroll-burst-per-source", fmt.Sprint(sourceBurst),
			"--enroll-rate", limitRate, "--enroll-burst", fmt.Sprint(globalBurst),
		},
	})
	if e.hub != nil {
		cl.Add(e.hub.Stop)
	}
	if err != nil {
		return nil, err
	}
	return e, nil
}

// hostKubectl runs kubectl against the host cluster as its admin.
func (e *environment) hostKubectl(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, e.bins.Kubectl, append([]string{"--kubeconfig", e.hostKubeconfig}, args...)...).CombinedOutput()
	return string(out), err
}

// ctl runs backhaulctl against the host cluster as its admin.
func (e *environment) ctl(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, e.ctlBin, append([]string{"--kubeconfig", e.hostKubeconfig, "--namespace", ns}, args...)...).CombinedOutput()
	return string(out), err
}
