package ctl

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	apischeme "backhaul.io/backhaul/pkg/apis/scheme"
)

func TestResolveHubInfo(t *testing.T) {
	dir := t.TempDir()
	flagCA, cmCA := testCA(t), testCA(t)
	caFile := writeFile(t, dir, "ca.crt", flagCA)
	junkFile := writeFile(t, dir, "junk", []byte("not a certificate"))
	cm := hubInfoConfigMap("wss://cm.example.com:8443", cmCA)
	cmNoURL := hubInfoConfigMap("", cmCA)
	cmBadCA := hubInfoConfigMap("wss://cm.example.com:8443", []byte("junk"))

	tests := []struct {
		name        string
		objs        []client.Object
		cmForbidden bool
		hubURL      string
		caFile      string
		wantTunnel  string
		wantGateway string
		wantCA      []byte
		wantErr     string
	}{
		{name: "ConfigMap", objs: []client.Object{cm},
			wantTunnel: "wss://cm.example.com:8443", wantGateway: "https://cm.example.com:8443", wantCA: cmCA},
		{name: "flags win, ConfigMap not read", objs: []client.Object{cm}, cmForbidden: true,
			hubURL: "https://flag.example.com/backhaul/", caFile: caFile,
			wantTunnel: "wss://flag.example.com/backhaul", wantGateway: "https://flag.example.com/backhaul", wantCA: flagCA},
		{name: "flags only", hubURL: "wss://flag.example.com", caFile: caFile,
			wantTunnel: "wss://flag.example.com", wantGateway: "https://flag.example.com", wantCA: flagCA},
		{name: "URL flag, CA from ConfigMap", objs: []client.Object{cm}, hubURL: "wss://flag.example.com",
			wantTunnel: "wss://flag.example.com", wantGateway: "https://flag.example.com", wantCA: cmCA},
		{name: "CA flag, URL from ConfigMap", objs: []client.Object{cm}, caFile: caFile,
			wantTunnel: "wss://cm.example.com:8443", wantGateway: "https://cm.example.com:8443", wantCA: flagCA},
		{name: "nothing",
			wantErr: `hub address unknown: pass --hub-url and --hub-ca-file, or create ConfigMap backhaul-system/backhaul-hub-info with keys "url" (wss://host:port) and "ca.crt" (PEM)`},
		{name: "no ConfigMap, URL flag only", hubURL: "wss://flag.example.com",
			wantErr: "hub address unknown: pass --hub-ca-file, or create ConfigMap backhaul-system/backhaul-hub-info"},
		{name: "ConfigMap without url", objs: []client.Object{cmNoURL},
			wantErr: `hub URL unknown: pass --hub-url, or set key "url" of ConfigMap backhaul-system/backhaul-hub-info`},
		{name: "ConfigMap with junk CA", objs: []client.Object{cmBadCA},
			wantErr: `hub CA from key "ca.crt" of ConfigMap backhaul-system/backhaul-hub-info: no PEM certificate found`},
		{name: "junk CA file", hubURL: "wss://flag.example.com", caFile: junkFile,
			wantErr: "hub CA from --hub-ca-file " + junkFile + ": no PEM certificate found"},
		{name: "missing CA file", hubURL: "wss://flag.example.com", caFile: filepath.Join(dir, "nope"),
			wantErr: "--hub-ca-file: open "},
		{name: "ConfigMap not readable", objs: []client.Object{cm}, cmForbidden: true,
			wantErr: "read ConfigMap backhaul-system/backhaul-hub-info (or pass --hub-url and --hub-ca-file): configmaps \"backhaul-hub-info\" is forbidden"},
		{name: "ConfigMap URL of the wrong scheme", objs: []client.Object{hubInfoConfigMap("http://cm.example.com", cmCA)},
			wantErr: `hub URL from key "url" of ConfigMap backhaul-system/backhaul-hub-info: "http://cm.example.com": want wss://host:port`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := apischeme.New()
			require.NoError(t, err)
			b := fake.NewClientBuilder().WithScheme(s).WithObjects(tc.objs...)
			if tc.cmForbidden {
				b = b.WithInterceptorFuncs(interceptor.Funcs{
					Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
						if _, ok := obj.(*corev1.ConfigMap); ok {
							return apierrors.NewForbidden(corev1.Resource("configmaps"), key.Name, errors.New("no RBAC"))
						}
						return c.Get(ctx, key, obj, opts...)
					},
				})
			}
			o := NewGlobalOptions()
			o.HubURL, o.HubCAFile = tc.hubURL, tc.caFile
			info, err := resolveHubInfo(context.Background(), b.Build(), o)
			if tc.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.wantTunnel, info.TunnelURL())
			assert.Equal(t, tc.wantGateway, info.GatewayURL())
			assert.Equal(t, tc.wantCA, info.CA)
		})
	}
}

func TestParseHubURL(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{in: "wss://hub.example.com:8443", want: "wss://hub.example.com:8443"},
		{in: " https://hub.example.com/ ", want: "https://hub.example.com"},
		{in: "wss://[2001:db8::1]:8443/x//", want: "wss://[2001:db8::1]:8443/x"},
		{in: "http://hub.example.com", wantErr: true},
		{in: "ws://hub.example.com", wantErr: true},
		{in: "hub.example.com:8443", wantErr: true},
		{in: "wss://", wantErr: true},
		{in: "wss://user:pw@hub.example.com", wantErr: true},
		{in: "wss://hub.example.com/?a=b", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			u, err := parseHubURL(tc.in)
			if tc.wantErr {
				assert.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, u.String())
		})
	}
}
