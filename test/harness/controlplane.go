package harness

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// StartControlPlane starts kube-controller-manager and kube-scheduler in
// the member's namespace, each with a client certificate of the identity
// the default RBAC policy grants it (system:kube-controller-manager,
// system:kube-scheduler), so Deployments, DaemonSets, Services and
// ServiceAccounts behave as on any cluster once a node has joined
// ([StartNode]). They run until [Member.Stop].
func (m *Member) StartControlPlane(ctx context.Context) error {
	nb, err := LocateNodeBinaries()
	if err != nil {
		return fmt.Errorf("member %s: %w", m.Name, err)
	}
	pki := filepath.Join(m.Dir, "pki")
	kcm, err := m.componentKubeconfig("kube-controller-manager", "system:kube-controller-manager", nil)
	if err != nil {
		return err
	}
	sched, err := m.componentKubeconfig("kube-scheduler", "system:kube-scheduler", nil)
	if err != nil {
		return err
	}
	procs := []struct {
		name string
		bin  string
		args []string
	}{
		{"kube-controller-manager", nb.KubeControllerManager, []string{
			"--kubeconfig=" + kcm,
			"--authentication-kubeconfig=" + kcm,
			"--authorization-kubeconfig=" + kcm,
			"--use-service-account-credentials=true",
			"--service-account-private-key-file=" + m.saKeyFile,
			"--root-ca-file=" + m.CAFile,
			"--cluster-signing-cert-file=" + m.CA.CertFile,
			"--cluster-signing-key-file=" + m.CA.KeyFile,
			"--leader-elect=false",
			"--bind-address=127.0.0.1",
			"--secure-port=10257",
			"--cert-dir=" + filepath.Join(pki, "kube-controller-manager"),
			// A lost node's Pods are evicted after this: short, so the
			// tests that stop a node see its Pods move in test time.
			"--node-monitor-grace-period=20s",
			"--v=1",
		}},
		{"kube-scheduler", nb.KubeScheduler, []string{
			"--kubeconfig=" + sched,
			"--authentication-kubeconfig=" + sched,
			"--authorization-kubeconfig=" + sched,
			"--leader-elect=false",
			"--bind-address=127.0.0.1",
			"--secure-port=10259",
			"--cert-dir=" + filepath.Join(pki, "kube-scheduler"),
			"--v=1",
		}},
	}
	// As kubeadm does: the API server's kubelet client may use every
	// kubelet API (exec, logs, port-forward through nodes/proxy).
	if _, _, err := m.Kubectl(ctx, "create", "clusterrolebinding", "kube-apiserver-kubelet-api-admin",
		"--clusterrole=system:kubelet-api-admin", "--user=kube-apiserver-kubelet-client"); err != nil && !strings.Contains(err.Error(), "AlreadyExists") {
		return fmt.Errorf("member %s: %w", m.Name, err)
	}
	if err := m.startControllers(ctx, procs); err != nil {
		return fmt.Errorf("member %s: %w", m.Name, err)
	}
	// The controller manager is working once it has made the default
	// namespace's ServiceAccount (no Pod is admitted before).
	err = WaitFor(ctx, ReadyTimeout, 250*time.Millisecond, func() error {
		m.mu.Lock()
		ps := m.controllers
		m.mu.Unlock()
		for _, p := range ps {
			select {
			case <-p.Exited():
				return Permanent(fmt.Errorf("%s exited: %v\n%s", p.Name(), p.Err(), p.Tail(20)))
			default:
			}
		}
		_, _, err := m.Kubectl(ctx, "get", "serviceaccount", "default", "-n", "default", "-o", "name")
		return err
	})
	if err != nil {
		return fmt.Errorf("member %s: control plane not ready: %w", m.Name, err)
	}
	return nil
}

func (m *Member) startControllers(ctx context.Context, procs []struct {
	name string
	bin  string
	args []string
}) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped {
		return errors.New("member is stopped")
	}
	if len(m.controllers) > 0 {
		return errors.New("control plane already started")
	}
	for _, p := range procs {
		proc, err := Start(ctx, p.name, m.logDir, m.Netns.Command(context.WithoutCancel(ctx), p.bin, p.args...))
		if err != nil {
			return err
		}
		m.controllers = append(m.controllers, proc)
	}
	return nil
}

// componentKubeconfig issues a client certificate for user cn in groups
// from the member's CA and writes a kubeconfig for InternalURL that uses
// it; it returns the kubeconfig's path.
func (m *Member) componentKubeconfig(name, cn string, groups []string) (string, error) {
	return certKubeconfig(m.CA, filepath.Join(m.Dir, name+".kubeconfig"), name, m.InternalURL, cn, groups)
}

// certKubeconfig issues a client certificate for cn (in groups) from ca,
// named name in ca's directory, and writes a kubeconfig at path that
// reaches server, trusts ca and presents that certificate.
func certKubeconfig(ca *CA, path, name, server, cn string, groups []string) (string, error) {
	certFile, keyFile, err := ca.Client(name, cn, groups)
	if err != nil {
		return "", err
	}
	cfg := `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
    server: ` + strconv.Quote(server) + `
    certificate-authority-data: ` + base64.StdEncoding.EncodeToString(ca.CertPEM) + `
users:
- name: u
  user:
    client-certificate: ` + strconv.Quote(certFile) + `
    client-key: ` + strconv.Quote(keyFile) + `
contexts:
- name: c
  context: {cluster: c, user: u}
current-context: c
`
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return "", fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	return path, nil
}
