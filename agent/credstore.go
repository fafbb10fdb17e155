package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"backhaul.io/backhaul/pkg/identity"
)

// Stored is what an agent keeps between restarts.
type Stored struct {
	BootstrapToken string
	HubCA          []byte
	CertPEM        []byte
	KeyPEM         []byte
}

// CredentialStore keeps an agent's credentials: a Secret in the member
// (Deployment and DaemonSet agents) or a directory (standalone).
type CredentialStore interface {
	Load(ctx context.Context) (Stored, error)
	// SaveCert stores a certificate and its key, and forgets the bootstrap
	// token, which is spent.
	SaveCert(ctx context.Context, certPEM, keyPEM []byte) error
	String() string
}

// SecretStore keeps credentials in one Secret of the member cluster, which
// onboard.sh creates with the bootstrap token and the hub's CA. The agent's
// ServiceAccount may get and update that Secret and nothing else.
type SecretStore struct {
	Client          kubernetes.Interface
	Namespace, Name string
}

var _ CredentialStore = (*SecretStore)(nil)

func (s *SecretStore) String() string { return "secret " + s.Namespace + "/" + s.Name }

// Load implements CredentialStore.
func (s *SecretStore) Load(ctx context.Context) (Stored, error) {
	sec, err := s.Client.CoreV1().Secrets(s.Namespace).Get(ctx, s.Name, metav1.GetOptions{})
	if err != nil {
		return Stored{}, fmt.Errorf("reading %s: %w", s, err)
	}
	return Stored{
		BootstrapToken: strings.TrimSpace(string(sec.Data[identity.KeyBootstrapToken])),
		HubCA:          sec.Data[identity.KeyHubCA],
		CertPEM:        sec.Data[identity.KeyTLSCert],
		KeyPEM:         sec.Data[identity.KeyTLSKey],
	}, nil
}

// SaveCert implements CredentialStore. Several agents (DaemonSet pods) may
// share the Secret; an update conflict is retried on a fresh copy.
func (s *SecretStore) SaveCert(ctx context.Context, certPEM, keyPEM []byte) error {
	secrets := s.Client.CoreV1().Secrets(s.Namespace)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		sec, err := secrets.Get(ctx, s.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if sec.Data == nil {
			sec.Data = map[string][]byte{}
		}
		sec.Data[identity.KeyTLSCert] = certPEM
		sec.Data[identity.KeyTLSKey] = keyPEM
		delete(sec.Data, identity.KeyBootstrapToken)
		_, err = secrets.Update(ctx, sec, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("writing %s: %w", s, err)
	}
	return nil
}

// DirStore keeps credentials as files: bootstrap-token, hub-ca.crt,
// tls.crt and tls.key (0600) in Dir.
type DirStore struct {
	Dir string
}

var _ CredentialStore = (*DirStore)(nil)

func (d *DirStore) String() string { return "directory " + d.Dir }

// Load implements CredentialStore. Missing files are empty values.
func (d *DirStore) Load(context.Context) (Stored, error) {
	read := func(name string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(d.Dir, name))
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return b, err
	}
	var st Stored
	var errs []error
	tok, err := read(identity.KeyBootstrapToken)
	errs = append(errs, err)
	st.BootstrapToken = strings.TrimSpace(string(tok))
	st.HubCA, err = read(identity.KeyHubCA)
	errs = append(errs, err)
	st.CertPEM, err = read(identity.KeyTLSCert)
	errs = append(errs, err)
	st.KeyPEM, err = read(identity.KeyTLSKey)
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return Stored{}, fmt.Errorf("reading %s: %w", d, err)
	}
	return st, nil
}

// SaveCert implements CredentialStore: each file is replaced atomically,
// the key first, so a crash leaves a usable pair or the old one.
func (d *DirStore) SaveCert(_ context.Context, certPEM, keyPEM []byte) error {
	for _, f := range []struct {
		name string
		data []byte
	}{{identity.KeyTLSKey, keyPEM}, {identity.KeyTLSCert, certPEM}} {
		tmp := filepath.Join(d.Dir, "."+f.name+".tmp")
		if err := os.WriteFile(tmp, f.data, 0o600); err != nil {
			return fmt.Errorf("writing %s: %w", d, err)
		}
		if err := os.Rename(tmp, filepath.Join(d.Dir, f.name)); err != nil {
			return fmt.Errorf("writing %s: %w", d, err)
		}
	}
	if err := os.Remove(filepath.Join(d.Dir, identity.KeyBootstrapToken)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing spent bootstrap token: %w", err)
	}
	return nil
}
