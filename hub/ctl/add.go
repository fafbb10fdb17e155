package ctl

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
	"backhaul.io/backhaul/pkg/identity"
)

// Agent install modes onboard.sh knows.
const (
	ModeDeployment = "deployment"
	ModeDaemonSet  = "daemonset"
)

// OnboardScript is the script the printed command runs (deploy/onboard.sh).
const OnboardScript = "onboard.sh"

// tokenAttempts bounds retries when a fresh token's ID names an existing
// Secret (1 in 36^6 per existing token).
const tokenAttempts = 3

type addOptions struct {
	labels  string
	ttl     time.Duration
	image   string
	mode    string
	reissue bool
}

func newAddCommand(r *runner) *cobra.Command {
	o := addOptions{ttl: identity.DefaultTokenTTL}
	cmd := &cobra.Command{
		Use:   "add NAME",
		Short: "Register a member cluster and print the command that onboards it",
		Long: `Creates the Cluster object and a single-use bootstrap token, and prints the
one command to run at the edge site, with the member cluster's kubeconfig,
to install the agent. The token is shown only here; the hub stores its hash.

With --reissue-token the cluster must exist already, and only a new token is
issued (the previous ones stay valid until they expire).`,
		Example: `  backhaulctl cluster add edge-1 --labels region=eu,site=ams
  backhaulctl cluster add edge-1 --reissue-token --token-ttl 30m
  backhaulctl cluster add idc-7 --mode daemonset`,
		Args: exactArgs(1, "a cluster name"),
		RunE: runE(func(ctx context.Context, args []string) error {
			return r.add(ctx, args[0], o)
		}),
	}
	fs := cmd.Flags()
	fs.StringVar(&o.labels, "labels", "", "labels of the new Cluster, k=v,k2=v2 (placement selects on them)")
	fs.DurationVar(&o.ttl, "token-ttl", o.ttl, "how long the bootstrap token stays valid if unused")
	fs.StringVar(&o.image, "image", "", "agent image for onboard.sh (default: the script's)")
	fs.StringVar(&o.mode, "mode", "", "agent install mode for onboard.sh: deployment (API server only) or daemonset (adds node and kubelet access) (default: the script's, deployment)")
	fs.BoolVar(&o.reissue, "reissue-token", false, "only issue a new bootstrap token for an existing cluster")
	return cmd
}

func (o addOptions) validate(name string) (labels.Set, error) {
	var errs []error
	// A DNS label, not just the subdomain any object name may be: the name
	// is one host label in CONNECT targets (NAME.cluster.backhaul), one path
	// segment of the gateway, and the hub, agent and onboard.sh all refuse
	// anything else.
	if msgs := validation.IsDNS1123Label(name); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("cluster name %q: %s", name, strings.Join(msgs, "; ")))
	}
	set, err := labels.ConvertSelectorToLabelsMap(o.labels)
	if err != nil {
		errs = append(errs, fmt.Errorf("--labels %q: %w", o.labels, err))
	}
	if o.reissue && o.labels != "" {
		errs = append(errs, errors.New("--labels cannot be combined with --reissue-token, which leaves the Cluster as it is"))
	}
	if o.ttl <= 0 {
		errs = append(errs, fmt.Errorf("--token-ttl %s: must be positive", o.ttl))
	}
	if o.mode != "" && o.mode != ModeDeployment && o.mode != ModeDaemonSet {
		errs = append(errs, fmt.Errorf("--mode %q: want %s or %s", o.mode, ModeDeployment, ModeDaemonSet))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, usageError{err}
	}
	return set, nil
}

func (r *runner) add(ctx context.Context, name string, o addOptions) error {
	lbls, err := o.validate(name)
	if err != nil {
		return err
	}
	c, err := r.client()
	if err != nil {
		return err
	}
	// Before anything is created, so a missing hub address leaves nothing
	// behind.
	hub, err := resolveHubInfo(ctx, c, r.opts)
	if err != nil {
		return err
	}

	cluster := &v1alpha1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if o.reissue {
		if err := c.Get(ctx, client.ObjectKeyFromObject(cluster), cluster); err != nil {
			if apierrors.IsNotFound(err) {
				return fmt.Errorf("cluster %q does not exist; add it without --reissue-token", name)
			}
			return explain(err)
		}
		if cluster.DeletionTimestamp != nil {
			return fmt.Errorf("cluster %q is being removed; add it again once it is gone", name)
		}
	} else {
		if len(lbls) > 0 {
			cluster.Labels = lbls
		}
		if err := c.Create(ctx, cluster); err != nil {
			if apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("cluster %q already exists; use --reissue-token to issue a new bootstrap token for it", name)
			}
			return explain(err)
		}
	}

	expires := r.env.Now().Add(o.ttl).UTC().Truncate(time.Second)
	token, err := createToken(ctx, c, r.opts.Namespace, cluster, expires)
	if err != nil && !o.reissue {
		// Undo the Cluster so that running the same command again works.
		if derr := c.Delete(ctx, cluster, client.Preconditions{UID: &cluster.UID}); derr != nil && !apierrors.IsNotFound(derr) {
			return fmt.Errorf("%w (cluster %q was created; remove it with `backhaulctl cluster remove %s` or retry with --reissue-token)", err, name, name)
		}
	}
	if err != nil {
		return err
	}
	return printOnboarding(r.env.Out, onboarding{
		cluster: name, reissued: o.reissue, hub: hub, token: token,
		expires: expires, ttl: o.ttl, mode: o.mode, image: o.image,
	})
}

// createToken stores a new bootstrap token's hash for cluster, owned by the
// Cluster so that removing it garbage-collects its tokens.
func createToken(ctx context.Context, c client.Client, namespace string, cluster *v1alpha1.Cluster, expires time.Time) (identity.Token, error) {
	for range tokenAttempts {
		token, err := identity.NewToken()
		if err != nil {
			return identity.Token{}, err
		}
		err = c.Create(ctx, tokenSecret(namespace, cluster, token, expires))
		switch {
		case err == nil:
			return token, nil
		case apierrors.IsAlreadyExists(err):
			continue
		default:
			return identity.Token{}, fmt.Errorf("create bootstrap token Secret in namespace %q: %w", namespace, explain(err))
		}
	}
	return identity.Token{}, fmt.Errorf("create bootstrap token Secret in namespace %q: %d token IDs in a row were taken", namespace, tokenAttempts)
}

func tokenSecret(namespace string, cluster *v1alpha1.Cluster, token identity.Token, expires time.Time) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name:      token.SecretName(),
			Namespace: namespace,
			Labels:    map[string]string{identity.LabelCluster: cluster.Name},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: v1alpha1.SchemeGroupVersion.String(),
				Kind:       "Cluster",
				Name:       cluster.Name,
				UID:        cluster.UID,
			}},
		},
		Type: identity.BootstrapSecretType,
		Data: map[string][]byte{
			identity.KeyTokenID:    []byte(token.ID),
			identity.KeyTokenHash:  []byte(token.Hash()),
			identity.KeyCluster:    []byte(cluster.Name),
			identity.KeyExpiration: []byte(expires.Format(time.RFC3339)),
		},
	}
}

type onboarding struct {
	cluster  string
	reissued bool
	hub      HubInfo
	token    identity.Token
	expires  time.Time
	ttl      time.Duration
	mode     string
	image    string
}

// command is the line to run at the edge site.
func (ob onboarding) command() string {
	args := []string{"sh", OnboardScript,
		"--hub-url", ob.hub.TunnelURL(),
		"--cluster", ob.cluster,
		"--token", ob.token.String(),
		"--hub-ca-data", base64.StdEncoding.EncodeToString(ob.hub.CA),
	}
	if ob.mode != "" {
		args = append(args, "--mode", ob.mode)
	}
	if ob.image != "" {
		args = append(args, "--image", ob.image)
	}
	for i, a := range args {
		args[i] = shellQuote(a)
	}
	return strings.Join(args, " ")
}

func printOnboarding(w io.Writer, ob onboarding) error {
	verb := "created"
	if ob.reissued {
		verb = "bootstrap token issued"
	}
	_, err := fmt.Fprintf(w, `%s/%s %s

Run this at the edge site, with the member cluster's kubeconfig (KUBECONFIG or ~/.kube/config):

%s

The token expires at %s (in %s), works once, and is not shown again.
`, resourceName, ob.cluster, verb, ob.command(), ob.expires.Format(time.RFC3339), ob.ttl)
	return err
}

// shellQuote leaves words made of safe characters alone and single-quotes
// the rest, so the printed command pastes into sh unchanged.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:=@,+%", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
