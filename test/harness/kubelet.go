package harness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// TestKubeletBinary builds ./test/kubelet into the bin dir as
// backhaul-test-kubelet (straight to that name: the real kubelet of `make
// kube-bins` lives there as "kubelet").
func TestKubeletBinary(ctx context.Context) (string, error) {
	dir, err := binDir()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "backhaul-test-kubelet")
	if err := goBuild(ctx, bin, "./test/kubelet"); err != nil {
		return "", err
	}
	return bin, nil
}

// Kubelet is a test kubelet running in a namespace.
type Kubelet struct {
	NodeName string
	IP       string
	// LogDir holds NAMESPACE_POD_CONTAINER.log files it serves.
	LogDir string
	Proc   *Process
}

// StartKubelet runs the test kubelet at ip:10250 inside ns, with a serving
// certificate from ca (which the API server must trust) and trusting
// clientCA for the API server's client certificate.
func StartKubelet(ctx context.Context, bin string, ns *Netns, ca *CA, clientCAFile, nodeName, ip, dir string) (*Kubelet, error) {
	logDir := filepath.Join(dir, "containers")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, err
	}
	cert, key, err := ca.Serving("kubelet-"+nodeName, []string{ip, nodeName})
	if err != nil {
		return nil, err
	}
	cmd := ns.Command(context.Background(), bin, "--listen", ip+":10250", "--tls-cert-file", cert, "--tls-key-file", key,
		"--client-ca-file", clientCAFile, "--log-dir", logDir)
	p, err := Start(ctx, "kubelet-"+nodeName, dir, cmd)
	if err != nil {
		return nil, err
	}
	// Listening is quick; wait until the port answers from inside the ns.
	err = WaitFor(ctx, 10*time.Second, 50*time.Millisecond, func() error {
		return ns.Command(ctx, "bash", "-c", "exec 3<>/dev/tcp/"+ip+"/10250").Run()
	})
	if err != nil {
		p.Stop()
		return nil, fmt.Errorf("test kubelet did not listen: %w\n%s", err, p.Tail(20))
	}
	return &Kubelet{NodeName: nodeName, IP: ip, LogDir: logDir, Proc: p}, nil
}

// RegisterNode creates the Node object for k in m and points its status at
// k's address and port, so the API server's logs/exec/attach/port-forward
// go there.
func (m *Member) RegisterNode(ctx context.Context, k *Kubelet) error {
	manifest := filepath.Join(m.Dir, "node-"+k.NodeName+".yaml")
	if err := os.WriteFile(manifest, []byte("apiVersion: v1\nkind: Node\nmetadata:\n  name: "+k.NodeName+"\n"), 0o644); err != nil {
		return err
	}
	if _, stderr, err := m.Kubectl(ctx, "apply", "-f", manifest); err != nil {
		return fmt.Errorf("create node %s: %w: %s", k.NodeName, err, stderr)
	}
	patch := fmt.Sprintf(`{"status":{"addresses":[{"type":"InternalIP","address":%q}],"daemonEndpoints":{"kubeletEndpoint":{"Port":10250}}}}`, k.IP)
	if _, stderr, err := m.Kubectl(ctx, "patch", "node", k.NodeName, "--subresource=status", "--type=merge", "-p", patch); err != nil {
		return fmt.Errorf("node %s status: %w: %s", k.NodeName, err, stderr)
	}
	return nil
}

// RunningPod creates namespace ns (with the default ServiceAccount that no
// controller manager is there to make), a Pod bound to node with the named
// containers, and marks it Running, so the API server accepts logs, exec,
// attach and port-forward to it. extra is more YAML documents to apply with
// it (RBAC for a test, say).
func (m *Member) RunningPod(ctx context.Context, ns, pod, node string, containers []string, extra string) error {
	var spec, status strings.Builder
	for i, c := range containers {
		fmt.Fprintf(&spec, "  - {name: %s, image: example.invalid/app}\n", c)
		if i > 0 {
			status.WriteString(",")
		}
		fmt.Fprintf(&status, `{"name":%q,"ready":true,"restartCount":0,"image":"example.invalid/app","imageID":"","state":{"running":{}}}`, c)
	}
	manifest := filepath.Join(m.Dir, "pod-"+ns+"-"+pod+".yaml")
	doc := fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata: {name: %[1]s}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: default, namespace: %[1]s}
---
apiVersion: v1
kind: Pod
metadata: {name: %[2]s, namespace: %[1]s}
spec:
  nodeName: %[3]s
  automountServiceAccountToken: false
  containers:
%[4]s`, ns, pod, node, spec.String())
	if extra != "" {
		doc += "---\n" + extra
	}
	if err := os.WriteFile(manifest, []byte(doc), 0o644); err != nil {
		return err
	}
	if _, stderr, err := m.Kubectl(ctx, "apply", "-f", manifest); err != nil {
		return fmt.Errorf("pod %s/%s: %w: %s", ns, pod, err, stderr)
	}
	patch := `{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}],"containerStatuses":[` + status.String() + `]}}`
	if _, stderr, err := m.Kubectl(ctx, "patch", "pod", "-n", ns, pod, "--subresource=status", "--type=merge", "-p", patch); err != nil {
		return fmt.Errorf("pod %s/%s status: %w: %s", ns, pod, err, stderr)
	}
	return nil
}
