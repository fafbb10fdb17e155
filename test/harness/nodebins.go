package harness

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// EnvCNIDir names the directory holding the CNI plugins, overriding
// /usr/lib/cni (Debian's containernetworking-plugins).
const EnvCNIDir = "BACKHAUL_CNI_DIR"

// NodeBinaries are the programs a real node runs: the kube components
// built by `make kube-bins` (beside kube-apiserver) and the container
// runtime, CNI plugins and conntrack from Debian's packages.
type NodeBinaries struct {
	Kubelet               string
	KubeProxy             string
	KubeControllerManager string
	KubeScheduler         string
	Containerd            string
	Ctr                   string
	CNIDir                string
}

// cniPlugins are the plugins the node's network configuration uses.
var cniPlugins = []string{"bridge", "host-local", "loopback", "portmap"}

// LocateNodeBinaries finds what [StartNode] and [Member.StartControlPlane]
// run, and fails naming everything missing (`make deps kube-bins` installs
// and builds all of it).
func LocateNodeBinaries() (NodeBinaries, error) {
	bins, err := LocateBinaries()
	if err != nil {
		return NodeBinaries{}, err
	}
	dir := filepath.Dir(bins.KubeAPIServer)
	b := NodeBinaries{
		Kubelet:               filepath.Join(dir, "kubelet"),
		KubeProxy:             filepath.Join(dir, "kube-proxy"),
		KubeControllerManager: filepath.Join(dir, "kube-controller-manager"),
		KubeScheduler:         filepath.Join(dir, "kube-scheduler"),
		CNIDir:                os.Getenv(EnvCNIDir),
	}
	if b.CNIDir == "" {
		b.CNIDir = "/usr/lib/cni"
	}
	var errs []error
	for _, p := range []string{b.Kubelet, b.KubeProxy, b.KubeControllerManager, b.KubeScheduler} {
		if err := executable(p); err != nil {
			errs = append(errs, err)
		}
	}
	for _, p := range cniPlugins {
		if err := executable(filepath.Join(b.CNIDir, p)); err != nil {
			errs = append(errs, fmt.Errorf("CNI plugin (containernetworking-plugins; %s overrides the directory): %w", EnvCNIDir, err))
		}
	}
	look := func(name, pkg string) string {
		p, err := exec.LookPath(name)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s (Debian package %s): %w", name, pkg, err))
		}
		return p
	}
	b.Containerd = look("containerd", "containerd")
	b.Ctr = look("ctr", "containerd")
	look("containerd-shim-runc-v2", "containerd")
	look("runc", "runc")
	look("conntrack", "conntrack")
	if err := errors.Join(errs...); err != nil {
		return NodeBinaries{}, fmt.Errorf("locate node binaries (make deps kube-bins): %w", err)
	}
	return b, nil
}

func executable(p string) error {
	st, err := os.Stat(p)
	if err != nil {
		return err
	}
	if st.IsDir() || st.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not executable", p)
	}
	return nil
}
