package ctl

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// KubeconfigUser names the one user entry of a generated kubeconfig.
const KubeconfigUser = "backhaul"

func newKubeconfigCommand(r *runner) *cobra.Command {
	var file, selector string
	cmd := &cobra.Command{
		Use:   "kubeconfig",
		Short: "Write a kubeconfig that reaches every member cluster through the hub",
		Long: `Writes a kubeconfig with one cluster and one context per Cluster object, each
pointing at the hub's gateway (https://HUB/clusters/NAME) and trusting the
hub's CA. Its one user is a copy of the credentials of your current context
in the host cluster kubeconfig (token, client certificate, exec plugin...),
with files inlined so the output stands alone: the hub authenticates you as
the host cluster does (TokenReview or client certificates), and each member's
RBAC decides what you may do there.`,
		Example: `  backhaulctl kubeconfig --output ~/.kube/backhaul
  KUBECONFIG=~/.kube/backhaul kubectl --context edge-1 get nodes`,
		Args: noArgs,
		RunE: runE(func(ctx context.Context, _ []string) error {
			return r.kubeconfig(ctx, selector, file)
		}),
	}
	cmd.Flags().StringVar(&file, "output", "", "file to write (mode 0600); default: standard output")
	cmd.Flags().StringVarP(&selector, "selector", "l", "", "only clusters matching this label selector")
	return cmd
}

func (r *runner) kubeconfig(ctx context.Context, selector, file string) error {
	sel, err := labels.Parse(selector)
	if err != nil {
		return usageErrorf("--selector: %w", err)
	}
	cc := r.opts.ClientConfig()
	raw, err := cc.RawConfig()
	if err != nil {
		return fmt.Errorf("host cluster kubeconfig: %w", err)
	}
	user, err := callerAuthInfo(raw, r.opts.Context)
	if err != nil {
		return err
	}
	c, err := r.env.NewClient(cc)
	if err != nil {
		return err
	}
	hub, err := resolveHubInfo(ctx, c, r.opts)
	if err != nil {
		return err
	}
	clusters, err := listClusters(ctx, c, sel)
	if err != nil {
		return err
	}
	if len(clusters) == 0 {
		return fmt.Errorf("no clusters found (selector %q)", selector)
	}
	if !hasCredentials(user) {
		fmt.Fprintf(r.env.ErrOut, "warning: your kubeconfig's user for this context has no credentials; the hub will refuse requests\n")
	}
	out := clientcmdapi.NewConfig()
	out.AuthInfos[KubeconfigUser] = user
	for i, cl := range clusters {
		out.Clusters[cl.Name] = &clientcmdapi.Cluster{
			Server:                   hub.GatewayURL() + "/clusters/" + cl.Name,
			CertificateAuthorityData: hub.CA,
		}
		out.Contexts[cl.Name] = &clientcmdapi.Context{Cluster: cl.Name, AuthInfo: KubeconfigUser}
		if i == 0 {
			out.CurrentContext = cl.Name
		}
	}
	if file != "" {
		if err := clientcmd.WriteToFile(*out, file); err != nil {
			return err
		}
		_, err := fmt.Fprintf(r.env.ErrOut, "wrote %d context(s) to %s\n", len(clusters), file)
		return err
	}
	b, err := clientcmd.Write(*out)
	if err != nil {
		return err
	}
	_, err = r.env.Out.Write(b)
	return err
}

// callerAuthInfo copies the credentials of the caller's context in the host
// cluster kubeconfig with every file reference read in.
func callerAuthInfo(raw clientcmdapi.Config, contextName string) (*clientcmdapi.AuthInfo, error) {
	if len(raw.Contexts) == 0 {
		return nil, fmt.Errorf("no kubeconfig for the host cluster: pass --kubeconfig or set KUBECONFIG")
	}
	if contextName == "" {
		contextName = raw.CurrentContext
	}
	if contextName == "" {
		return nil, fmt.Errorf("host cluster kubeconfig has no current context; pass --context")
	}
	kctx, ok := raw.Contexts[contextName]
	if !ok {
		return nil, fmt.Errorf("context %q not found in the host cluster kubeconfig", contextName)
	}
	src, ok := raw.AuthInfos[kctx.AuthInfo]
	if !ok {
		return nil, fmt.Errorf("user %q of context %q not found in the host cluster kubeconfig", kctx.AuthInfo, contextName)
	}
	user := src.DeepCopy()
	// The loader resolves relative paths against the file that named them;
	// resolve again in case this entry did not come through it.
	var base string
	if user.LocationOfOrigin != "" {
		base = filepath.Dir(user.LocationOfOrigin)
	}
	read := func(path *string, data *[]byte) error {
		if *path == "" {
			return nil
		}
		p := *path
		if !filepath.IsAbs(p) && base != "" {
			p = filepath.Join(base, p)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("user %q: %w", kctx.AuthInfo, err)
		}
		*data, *path = b, ""
		return nil
	}
	var token []byte
	for _, f := range []struct {
		path *string
		data *[]byte
	}{
		{&user.ClientCertificate, &user.ClientCertificateData},
		{&user.ClientKey, &user.ClientKeyData},
		{&user.TokenFile, &token},
	} {
		if err := read(f.path, f.data); err != nil {
			return nil, err
		}
	}
	if token != nil {
		user.Token = strings.TrimSpace(string(token))
	}
	user.LocationOfOrigin = ""
	return user, nil
}

func hasCredentials(u *clientcmdapi.AuthInfo) bool {
	return u.Token != "" || len(u.ClientCertificateData) > 0 || u.Exec != nil || u.AuthProvider != nil || u.Username != ""
}
