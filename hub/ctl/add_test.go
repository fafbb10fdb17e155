package ctl

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
	apischeme "backhaul.io/backhaul/pkg/apis/scheme"
	"backhaul.io/backhaul/pkg/identity"
)

// onboardCommand finds the printed onboarding line and returns its flags.
func onboardCommand(t *testing.T, out string) map[string]string {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, "sh "+OnboardScript+" ") {
			continue
		}
		fields := strings.Fields(strings.TrimPrefix(line, "sh "+OnboardScript+" "))
		require.Zero(t, len(fields)%2, "flag without value in %q", line)
		flags := map[string]string{}
		for i := 0; i < len(fields); i += 2 {
			require.True(t, strings.HasPrefix(fields[i], "--"), "not a flag: %q", fields[i])
			flags[fields[i]] = fields[i+1]
		}
		return flags
	}
	t.Fatalf("no onboarding command in output:\n%s", out)
	return nil
}

func tokenSecrets(t *testing.T, c client.Reader) []corev1.Secret {
	t.Helper()
	var list corev1.SecretList
	require.NoError(t, c.List(context.Background(), &list, client.InNamespace(identity.DefaultNamespace)))
	return list.Items
}

// addTests are `cluster add` invocations and what each must print and create.
var addTests = []struct {
	name      string
	args      []string
	cmURL     string
	wantURL   string
	wantTTL   time.Duration
	wantExtra map[string]string
	wantLabel map[string]string
}{
	{
		name:    "defaults",
		args:    []string{"edge-1"},
		cmURL:   "wss://hub.example.com:8443",
		wantURL: "wss://hub.example.com:8443",
		wantTTL: identity.DefaultTokenTTL,
	},
	{
		name:      "labels mode image ttl",
		args:      []string{"edge-1", "--labels", "region=eu,site=ams", "--mode", "daemonset", "--image", "registry.example.com/backhaul-agent:v1.2.3", "--token-ttl", "30m"},
		cmURL:     "wss://hub.example.com:8443/",
		wantURL:   "wss://hub.example.com:8443",
		wantTTL:   30 * time.Minute,
		wantExtra: map[string]string{"--mode": "daemonset", "--image": "registry.example.com/backhaul-agent:v1.2.3"},
		wantLabel: map[string]string{"region": "eu", "site": "ams"},
	},
	{
		name:    "https hub URL becomes wss",
		args:    []string{"edge-1"},
		cmURL:   "https://hub.example.com",
		wantURL: "wss://hub.example.com",
		wantTTL: identity.DefaultTokenTTL,
	},
}

func TestAdd(t *testing.T) {
	ca := testCA(t)
	for _, tc := range addTests {
		t.Run(tc.name, func(t *testing.T) {
			c := newFakeClient(t, hubInfoConfigMap(tc.cmURL, ca))
			res := run(t, c, append([]string{"cluster", "add"}, tc.args...)...)
			require.Equal(t, 0, res.code, "stderr: %s", res.err)
			assert.Empty(t, res.err)

			var cluster v1alpha1.Cluster
			require.NoError(t, c.Get(context.Background(), client.ObjectKey{Name: "edge-1"}, &cluster))
			assert.Equal(t, tc.wantLabel, cluster.Labels)

			secrets := tokenSecrets(t, c)
			require.Len(t, secrets, 1)
			s := secrets[0]
			assert.Equal(t, corev1.SecretType(identity.BootstrapSecretType), s.Type)
			assert.Equal(t, map[string]string{identity.LabelCluster: "edge-1"}, s.Labels)
			require.Len(t, s.OwnerReferences, 1)
			owner := s.OwnerReferences[0]
			assert.Equal(t, "backhaul.io/v1alpha1", owner.APIVersion)
			assert.Equal(t, "Cluster", owner.Kind)
			assert.Equal(t, "edge-1", owner.Name)
			assert.Equal(t, cluster.UID, owner.UID)
			assert.ElementsMatch(t,
				[]string{identity.KeyTokenID, identity.KeyTokenHash, identity.KeyCluster, identity.KeyExpiration},
				keys(s.Data))
			assert.Equal(t, "edge-1", string(s.Data[identity.KeyCluster]))
			expires := testNow.Add(tc.wantTTL).Format(time.RFC3339)
			assert.Equal(t, expires, string(s.Data[identity.KeyExpiration]))

			flags := onboardCommand(t, res.out)
			token, err := identity.ParseToken(flags["--token"])
			require.NoError(t, err)
			assert.Equal(t, token.SecretName(), s.Name)
			assert.Equal(t, token.ID, string(s.Data[identity.KeyTokenID]))
			assert.Equal(t, token.Hash(), string(s.Data[identity.KeyTokenHash]))
			for k, v := range s.Data {
				assert.NotContains(t, string(v), token.Secret, "Secret key %s holds the token", k)
			}
			assert.NotContains(t, s.StringData, identity.KeyTokenHash)

			assert.Equal(t, tc.wantURL, flags["--hub-url"])
			assert.Equal(t, "edge-1", flags["--cluster"])
			gotCA, err := base64.StdEncoding.DecodeString(flags["--hub-ca-data"])
			require.NoError(t, err)
			assert.Equal(t, ca, gotCA)
			for k, v := range tc.wantExtra {
				assert.Equal(t, v, flags[k], k)
			}
			if tc.wantExtra == nil {
				assert.NotContains(t, flags, "--mode")
				assert.NotContains(t, flags, "--image")
			}
			assert.Contains(t, res.out, "cluster.backhaul.io/edge-1 created")
			assert.Contains(t, res.out, "The token expires at "+expires)
		})
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestAddFails(t *testing.T) {
	ca := testCA(t)
	tests := []struct {
		name         string
		existing     bool
		noHubInfo    bool
		args         []string
		wantErr      string
		wantClusters int
		wantSecrets  int
	}{
		{name: "duplicate", existing: true, args: []string{"edge-1"},
			wantErr: `error: cluster "edge-1" already exists; use --reissue-token`, wantClusters: 1},
		{name: "invalid name", args: []string{"Edge_1"}, wantErr: `cluster name "Edge_1"`},
		{name: "dotted name", args: []string{"edge.eu"}, wantErr: `cluster name "edge.eu": must not contain dots`},
		{name: "bad labels", args: []string{"edge-1", "--labels", "a=b=c"}, wantErr: "--labels"},
		{name: "bad label value", args: []string{"edge-1", "--labels", "a=not valid"}, wantErr: "--labels"},
		{name: "bad mode", args: []string{"edge-1", "--mode", "pod"}, wantErr: `--mode "pod"`},
		{name: "zero ttl", args: []string{"edge-1", "--token-ttl", "0s"}, wantErr: "--token-ttl 0s: must be positive"},
		{name: "reissue of missing cluster", args: []string{"edge-1", "--reissue-token"},
			wantErr: `cluster "edge-1" does not exist`},
		{name: "reissue with labels", existing: true, args: []string{"edge-1", "--reissue-token", "--labels", "a=b"},
			wantErr: "--labels cannot be combined with --reissue-token", wantClusters: 1},
		{name: "no hub info creates nothing", noHubInfo: true, args: []string{"edge-1"},
			wantErr: "pass --hub-url and --hub-ca-file"},
		{name: "bad hub url flag", args: []string{"edge-1", "--hub-url", "http://hub"},
			wantErr: "--hub-url"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var objs []client.Object
			if !tc.noHubInfo {
				objs = append(objs, hubInfoConfigMap("wss://hub.example.com:8443", ca))
			}
			if tc.existing {
				objs = append(objs, newCluster("edge-1", time.Hour))
			}
			c := newFakeClient(t, objs...)
			res := run(t, c, append([]string{"cluster", "add"}, tc.args...)...)
			assert.Equal(t, 1, res.code)
			assert.Contains(t, res.err, tc.wantErr)
			assert.True(t, strings.HasPrefix(res.err, "error: "), res.err)
			assert.NotContains(t, res.out, OnboardScript)

			var clusters v1alpha1.ClusterList
			require.NoError(t, c.List(context.Background(), &clusters))
			assert.Len(t, clusters.Items, tc.wantClusters)
			assert.Len(t, tokenSecrets(t, c), tc.wantSecrets)
		})
	}
}

func TestAddReissueToken(t *testing.T) {
	ca := testCA(t)
	existing := newCluster("edge-1", time.Hour, withLabels(map[string]string{"region": "eu"}))
	c := newFakeClient(t, hubInfoConfigMap("wss://hub.example.com:8443", ca), existing)

	first := run(t, c, "cluster", "add", "edge-1", "--reissue-token")
	require.Equal(t, 0, first.code, first.err)
	second := run(t, c, "cluster", "add", "edge-1", "--reissue-token")
	require.Equal(t, 0, second.code, second.err)
	assert.Contains(t, second.out, "cluster.backhaul.io/edge-1 bootstrap token issued")

	t1, t2 := onboardCommand(t, first.out)["--token"], onboardCommand(t, second.out)["--token"]
	assert.NotEqual(t, t1, t2)
	secrets := tokenSecrets(t, c)
	require.Len(t, secrets, 2)
	for _, s := range secrets {
		require.Len(t, s.OwnerReferences, 1)
		assert.Equal(t, existing.UID, s.OwnerReferences[0].UID)
	}
	var got v1alpha1.Cluster
	require.NoError(t, c.Get(context.Background(), client.ObjectKey{Name: "edge-1"}, &got))
	assert.Equal(t, existing.Labels, got.Labels)
}

// A Secret that cannot be created takes the new Cluster back with it, so
// the same command can simply be run again.
func TestAddRollsBackCluster(t *testing.T) {
	s, err := apischeme.New()
	require.NoError(t, err)
	c := fake.NewClientBuilder().WithScheme(s).
		WithObjects(hubInfoConfigMap("wss://hub.example.com:8443", testCA(t))).
		WithInterceptorFuncs(interceptor.Funcs{
			Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
				if _, ok := obj.(*corev1.Secret); ok {
					return apierrors.NewForbidden(corev1.Resource("secrets"), obj.GetName(), errors.New("no RBAC"))
				}
				return c.Create(ctx, obj, opts...)
			},
		}).Build()
	res := run(t, c, "cluster", "add", "edge-1")
	assert.Equal(t, 1, res.code)
	assert.Contains(t, res.err, "error: create bootstrap token Secret in namespace \"backhaul-system\"")
	assert.Contains(t, res.err, "forbidden")
	err = c.Get(context.Background(), client.ObjectKey{Name: "edge-1"}, &v1alpha1.Cluster{})
	assert.True(t, apierrors.IsNotFound(err), "cluster left behind: %v", err)
}

func TestShellQuote(t *testing.T) {
	tests := []struct{ in, want string }{
		{"wss://hub.example.com:8443", "wss://hub.example.com:8443"},
		{"abc123.0123456789abcdef", "abc123.0123456789abcdef"},
		{"QUJD+/=", "QUJD+/="},
		{"", "''"},
		{"a b", "'a b'"},
		{"it's", `'it'\''s'`},
		{"$(rm -rf /)", "'$(rm -rf /)'"},
	}
	for _, tc := range tests {
		assert.Equal(t, tc.want, shellQuote(tc.in), tc.in)
	}
}
