package harness

import (
	"encoding/base64"
	"fmt"
	"os"
	"strconv"
)

// WriteKubeconfig writes a single-context kubeconfig at path that talks to
// server, trusts caPEM and authenticates with a bearer token. The file is
// self-contained (the CA is embedded) and readable only by its owner.
func WriteKubeconfig(path, server string, caPEM []byte, token string) error {
	// strconv.Quote yields a valid YAML double-quoted scalar for these
	// printable ASCII values.
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: backhaul
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: backhaul
  user:
    token: %s
contexts:
- name: backhaul
  context:
    cluster: backhaul
    user: backhaul
current-context: backhaul
`, strconv.Quote(server), base64.StdEncoding.EncodeToString(caPEM), strconv.Quote(token))
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	return nil
}
