package ctl

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// hostKubeconfig writes a host-cluster kubeconfig whose users reference
// files by relative path, as many do.
func hostKubeconfig(t *testing.T) (path string, certPEM, keyPEM []byte) {
	t.Helper()
	dir := t.TempDir()
	certPEM, keyPEM = []byte("-----BEGIN CERTIFICATE-----\nY2VydA==\n-----END CERTIFICATE-----\n"), []byte("-----BEGIN EC PRIVATE KEY-----\na2V5\n-----END EC PRIVATE KEY-----\n")
	writeFile(t, dir, "admin.crt", certPEM)
	writeFile(t, dir, "admin.key", keyPEM)
	writeFile(t, dir, "sa-token", []byte("projected-token\n"))
	cfg := `apiVersion: v1
kind: Config
current-context: host-admin
clusters:
- name: host
  cluster:
    server: https://host.example.com:6443
contexts:
- name: host-admin
  context: {cluster: host, user: admin}
- name: host-sa
  context: {cluster: host, user: sa}
- name: host-oidc
  context: {cluster: host, user: oidc}
- name: host-nobody
  context: {cluster: host, user: nobody}
- name: host-dangling
  context: {cluster: host, user: ghost}
users:
- name: admin
  user:
    client-certificate: admin.crt
    client-key: admin.key
- name: sa
  user:
    tokenFile: sa-token
- name: oidc
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: kubelogin
      args: [get-token, --oidc-issuer-url=https://issuer.example.com]
      interactiveMode: IfAvailable
- name: nobody
  user: {}
`
	return writeFile(t, dir, "config", []byte(cfg)), certPEM, keyPEM
}

func TestKubeconfig(t *testing.T) {
	ca := testCA(t)
	kubeconfig, certPEM, keyPEM := hostKubeconfig(t)
	tests := []struct {
		name         string
		args         []string
		wantClusters []string
		wantUser     func(t *testing.T, u *clientcmdapi.AuthInfo)
		wantWarning  bool
	}{
		{
			name:         "client certificate inlined",
			wantClusters: []string{"edge-1", "idc-7", "new-site"},
			wantUser: func(t *testing.T, u *clientcmdapi.AuthInfo) {
				assert.Equal(t, certPEM, u.ClientCertificateData)
				assert.Equal(t, keyPEM, u.ClientKeyData)
				assert.Empty(t, u.ClientCertificate)
				assert.Empty(t, u.ClientKey)
			},
		},
		{
			name:         "token file inlined, selector",
			args:         []string{"--context", "host-sa", "-l", "region"},
			wantClusters: []string{"edge-1", "idc-7"},
			wantUser: func(t *testing.T, u *clientcmdapi.AuthInfo) {
				assert.Equal(t, "projected-token", u.Token)
				assert.Empty(t, u.TokenFile)
			},
		},
		{
			name:         "exec plugin copied",
			args:         []string{"--context", "host-oidc", "-l", "region=us"},
			wantClusters: []string{"idc-7"},
			wantUser: func(t *testing.T, u *clientcmdapi.AuthInfo) {
				require.NotNil(t, u.Exec)
				assert.Equal(t, "kubelogin", u.Exec.Command)
				assert.Equal(t, []string{"get-token", "--oidc-issuer-url=https://issuer.example.com"}, u.Exec.Args)
				assert.Equal(t, "client.authentication.k8s.io/v1", u.Exec.APIVersion)
			},
		},
		{
			name:         "no credentials warns",
			args:         []string{"--context", "host-nobody"},
			wantClusters: []string{"edge-1", "idc-7", "new-site"},
			wantUser:     func(*testing.T, *clientcmdapi.AuthInfo) {},
			wantWarning:  true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			objs := append(fleet(), hubInfoConfigMap("wss://hub.example.com:8443", ca))
			res := run(t, newFakeClient(t, objs...), append([]string{"kubeconfig", "--kubeconfig", kubeconfig}, tc.args...)...)
			require.Equal(t, 0, res.code, res.err)
			if tc.wantWarning {
				assert.Contains(t, res.err, "warning: ")
			} else {
				assert.Empty(t, res.err)
			}
			cfg, err := clientcmd.Load([]byte(res.out))
			require.NoError(t, err)
			require.NoError(t, clientcmd.Validate(*cfg))
			checkGenerated(t, cfg, ca, tc.wantClusters)
			tc.wantUser(t, cfg.AuthInfos[KubeconfigUser])
		})
	}
}

func checkGenerated(t *testing.T, cfg *clientcmdapi.Config, ca []byte, clusters []string) {
	t.Helper()
	assert.Equal(t, clusters[0], cfg.CurrentContext)
	assert.Len(t, cfg.Contexts, len(clusters))
	assert.Len(t, cfg.Clusters, len(clusters))
	assert.Len(t, cfg.AuthInfos, 1)
	require.Contains(t, cfg.AuthInfos, KubeconfigUser)
	for _, name := range clusters {
		require.Contains(t, cfg.Contexts, name)
		kctx := cfg.Contexts[name]
		assert.Equal(t, name, kctx.Cluster)
		assert.Equal(t, KubeconfigUser, kctx.AuthInfo)
		require.Contains(t, cfg.Clusters, name)
		assert.Equal(t, "https://hub.example.com:8443/clusters/"+name, cfg.Clusters[name].Server)
		assert.Equal(t, ca, cfg.Clusters[name].CertificateAuthorityData)
		// The generated client config must be usable as is.
		rc, err := clientcmd.NewNonInteractiveClientConfig(*cfg, name, nil, nil).ClientConfig()
		require.NoError(t, err)
		assert.Equal(t, "https://hub.example.com:8443/clusters/"+name, rc.Host)
	}
}

func TestKubeconfigToFile(t *testing.T) {
	ca := testCA(t)
	kubeconfig, certPEM, _ := hostKubeconfig(t)
	out := filepath.Join(t.TempDir(), "backhaul.kubeconfig")
	objs := append(fleet(), hubInfoConfigMap("https://hub.example.com:8443/", ca))
	res := run(t, newFakeClient(t, objs...), "kubeconfig", "--kubeconfig", kubeconfig, "--output", out)
	require.Equal(t, 0, res.code, res.err)
	assert.Empty(t, res.out)
	assert.Contains(t, res.err, "wrote 3 context(s) to "+out)

	st, err := os.Stat(out)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	cfg, err := clientcmd.LoadFromFile(out)
	require.NoError(t, err)
	checkGenerated(t, cfg, ca, []string{"edge-1", "idc-7", "new-site"})
	assert.Equal(t, certPEM, cfg.AuthInfos[KubeconfigUser].ClientCertificateData)
}

func TestKubeconfigFails(t *testing.T) {
	ca := testCA(t)
	kubeconfig, _, _ := hostKubeconfig(t)
	tests := []struct {
		name    string
		objs    []client.Object
		args    []string
		wantErr string
	}{
		{name: "no clusters", objs: []client.Object{hubInfoConfigMap("wss://hub.example.com", ca)},
			wantErr: "error: no clusters found"},
		{name: "selector matches none", objs: append(fleet(), hubInfoConfigMap("wss://hub.example.com", ca)),
			args: []string{"-l", "region=mars"}, wantErr: `error: no clusters found (selector "region=mars")`},
		{name: "no hub info", objs: fleet(),
			wantErr: "error: hub address unknown: pass --hub-url and --hub-ca-file"},
		{name: "unknown context", objs: fleet(), args: []string{"--context", "nope"},
			wantErr: `error: context "nope" not found in the host cluster kubeconfig`},
		{name: "dangling user", objs: fleet(), args: []string{"--context", "host-dangling"},
			wantErr: `error: user "ghost" of context "host-dangling" not found`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := run(t, newFakeClient(t, tc.objs...), append([]string{"kubeconfig", "--kubeconfig", kubeconfig}, tc.args...)...)
			assert.Equal(t, 1, res.code)
			assert.Empty(t, res.out)
			assert.Contains(t, res.err, tc.wantErr)
		})
	}
}

func TestKubeconfigNoHostKubeconfig(t *testing.T) {
	empty := writeFile(t, t.TempDir(), "empty", nil)
	res := run(t, newFakeClient(t, fleet()...), "kubeconfig", "--kubeconfig", empty)
	assert.Equal(t, 1, res.code)
	assert.Contains(t, res.err, "error: no kubeconfig for the host cluster: pass --kubeconfig or set KUBECONFIG")
}
