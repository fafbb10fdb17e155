package ctl

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apischeme "backhaul.io/backhaul/pkg/apis/scheme"
	"backhaul.io/backhaul/pkg/identity"
	"backhaul.io/backhaul/pkg/version"
)

// GlobalOptions are the flags every command shares.
type GlobalOptions struct {
	Kubeconfig string
	Context    string
	Namespace  string
	HubURL     string
	HubCAFile  string
}

// NewGlobalOptions returns the defaults.
func NewGlobalOptions() *GlobalOptions {
	return &GlobalOptions{Namespace: identity.DefaultNamespace}
}

// AddFlags registers the options on fs.
func (o *GlobalOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "kubeconfig of the hub's host cluster (default: $KUBECONFIG or ~/.kube/config)")
	fs.StringVar(&o.Context, "context", o.Context, "kubeconfig context of the hub's host cluster (default: the current context)")
	fs.StringVarP(&o.Namespace, "namespace", "n", o.Namespace, "namespace the hub runs in, where bootstrap tokens and the "+identity.HubInfoConfigMap+" ConfigMap live")
	fs.StringVar(&o.HubURL, "hub-url", o.HubURL, "hub address as agents and callers reach it, wss://host:port (default: key \""+identity.HubInfoKeyURL+"\" of ConfigMap "+identity.HubInfoConfigMap+")")
	fs.StringVar(&o.HubCAFile, "hub-ca-file", o.HubCAFile, "PEM CA bundle of the hub's serving certificate (default: key \""+identity.HubInfoKeyCA+"\" of ConfigMap "+identity.HubInfoConfigMap+")")
}

// Validate reports every problem at once.
func (o *GlobalOptions) Validate() error {
	var errs []error
	if msgs := validation.IsDNS1123Label(o.Namespace); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("--namespace %q: %s", o.Namespace, msgs[0]))
	}
	if o.HubURL != "" {
		if _, err := parseHubURL(o.HubURL); err != nil {
			errs = append(errs, fmt.Errorf("--hub-url: %w", err))
		}
	}
	return errors.Join(errs...)
}

// ClientConfig is the caller's kubeconfig for the host cluster, resolved
// the way kubectl does: --kubeconfig, else $KUBECONFIG, else ~/.kube/config.
func (o *GlobalOptions) ClientConfig() clientcmd.ClientConfig {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = o.Kubeconfig
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: o.Context})
}

// Env is the outside world one run of backhaulctl sees. Tests replace its
// parts; the zero value of a field means the real thing.
type Env struct {
	Out, ErrOut io.Writer
	// NewClient builds the host-cluster client from the caller's
	// kubeconfig; nil means NewClient.
	NewClient func(clientcmd.ClientConfig) (client.Client, error)
	// Now is the clock for ages and token expiry.
	Now func() time.Time
	// PollInterval paces `cluster remove --wait`.
	PollInterval time.Duration
}

func (e Env) withDefaults() Env {
	if e.Out == nil {
		e.Out = os.Stdout
	}
	if e.ErrOut == nil {
		e.ErrOut = os.Stderr
	}
	if e.NewClient == nil {
		e.NewClient = NewClient
	}
	if e.Now == nil {
		e.Now = time.Now
	}
	if e.PollInterval <= 0 {
		e.PollInterval = time.Second
	}
	return e
}

// NewClient builds a controller-runtime client for the host cluster.
func NewClient(cc clientcmd.ClientConfig) (client.Client, error) {
	cfg, err := cc.ClientConfig()
	if clientcmd.IsEmptyConfig(err) {
		return nil, errors.New("no kubeconfig for the host cluster: pass --kubeconfig or set KUBECONFIG")
	}
	if err != nil {
		return nil, fmt.Errorf("host cluster kubeconfig: %w", err)
	}
	cfg.UserAgent = "backhaulctl/" + version.Version
	s, err := apischeme.New()
	if err != nil {
		return nil, err
	}
	return client.New(cfg, client.Options{Scheme: s})
}
