package harness

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
)

// Environment variables overriding where binaries are found.
const (
	// EnvBinDir names a directory holding kube-apiserver and kubectl,
	// overriding <repo root>/_output/bin.
	EnvBinDir = "BACKHAUL_BIN_DIR"
	// EnvEtcd names the etcd binary, overriding a $PATH lookup of "etcd".
	EnvEtcd = "BACKHAUL_ETCD"
)

// Binaries are the absolute paths of the external programs a member runs.
type Binaries struct {
	KubeAPIServer string
	Kubectl       string
	Etcd          string
}

// LocateBinaries finds kube-apiserver and kubectl in $BACKHAUL_BIN_DIR or
// else <repo root>/_output/bin, where the repo root is the nearest directory
// at or above the working directory containing go.mod; and etcd at
// $BACKHAUL_ETCD or else on $PATH. It fails if any is missing or not
// executable.
func LocateBinaries() (Binaries, error) {
	binDir := os.Getenv(EnvBinDir)
	if binDir == "" {
		root, err := RepoRoot()
		if err != nil {
			return Binaries{}, fmt.Errorf("locate binaries (set %s to override): %w", EnvBinDir, err)
		}
		binDir = filepath.Join(root, "_output", "bin")
	}
	b := Binaries{
		KubeAPIServer: filepath.Join(binDir, "kube-apiserver"),
		Kubectl:       filepath.Join(binDir, "kubectl"),
		Etcd:          os.Getenv(EnvEtcd),
	}
	if b.Etcd == "" {
		p, err := exec.LookPath("etcd")
		if err != nil {
			return Binaries{}, fmt.Errorf("locate etcd (set %s to override): %w", EnvEtcd, err)
		}
		b.Etcd = p
	}
	var errs []error
	for _, p := range []*string{&b.KubeAPIServer, &b.Kubectl, &b.Etcd} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		*p = abs
		if st, err := os.Stat(abs); err != nil {
			errs = append(errs, fmt.Errorf("locate binaries: %w", err))
		} else if st.IsDir() || st.Mode().Perm()&0o111 == 0 {
			errs = append(errs, fmt.Errorf("locate binaries: %s is not executable", abs))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return Binaries{}, err
	}
	return b, nil
}

// RepoRoot returns the nearest directory at or above the working directory
// that contains a go.mod file.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("repo root: %w", err)
	}
	for {
		_, err := os.Stat(filepath.Join(dir, "go.mod"))
		if err == nil {
			return dir, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("repo root: %w", err)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("repo root: no go.mod at or above the working directory")
		}
		dir = parent
	}
}
