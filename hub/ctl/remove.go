package ctl

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
	"backhaul.io/backhaul/pkg/identity"
)

type removeOptions struct {
	wait           bool
	timeout        time.Duration
	ignoreNotFound bool
}

func newRemoveCommand(r *runner) *cobra.Command {
	o := removeOptions{timeout: time.Minute}
	cmd := &cobra.Command{
		Use:     "remove NAME",
		Aliases: []string{"rm"},
		Short:   "Remove a member cluster and its bootstrap tokens",
		Long: `Deletes the Cluster object and every bootstrap token Secret issued for it.
The hub closes the cluster's tunnel sessions when it sees the Cluster gone, and
certificates issued to its agents stop working, even if a cluster of the same
name is added again.`,
		Example: `  backhaulctl cluster remove edge-1
  backhaulctl cluster rm edge-1 --wait`,
		Args: exactArgs(1, "a cluster name"),
		RunE: runE(func(ctx context.Context, args []string) error {
			return r.remove(ctx, args[0], o)
		}),
	}
	fs := cmd.Flags()
	fs.BoolVar(&o.wait, "wait", false, "wait until the Cluster object is gone (finalizers done)")
	fs.DurationVar(&o.timeout, "timeout", o.timeout, "how long --wait waits")
	fs.BoolVar(&o.ignoreNotFound, "ignore-not-found", false, "succeed if the cluster does not exist")
	return cmd
}

func (r *runner) remove(ctx context.Context, name string, o removeOptions) error {
	if o.wait && o.timeout <= 0 {
		return usageErrorf("--timeout %s: must be positive", o.timeout)
	}
	c, err := r.client()
	if err != nil {
		return err
	}
	cluster := &v1alpha1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: name}}
	delErr := c.Delete(ctx, cluster)
	if delErr != nil && !apierrors.IsNotFound(delErr) {
		return explain(delErr)
	}
	// Tokens go even when the Cluster is already gone: garbage collection
	// would get to them, but not before they could be used against a
	// cluster of the same name added meanwhile.
	n, err := deleteTokens(ctx, c, r.opts.Namespace, name)
	if err != nil {
		return err
	}
	if apierrors.IsNotFound(delErr) {
		if n > 0 {
			fmt.Fprintf(r.env.ErrOut, "removed %d leftover bootstrap token(s) of %q\n", n, name)
		}
		if o.ignoreNotFound {
			return nil
		}
		return delErr
	}
	if o.wait {
		if err := r.waitGone(ctx, c, name, o.timeout); err != nil {
			return err
		}
	}
	_, err = fmt.Fprintf(r.env.Out, "%s/%s removed\n", resourceName, name)
	return err
}

// deleteTokens deletes the bootstrap token Secrets labelled for cluster.
// List and Delete rather than DeleteAllOf, so that the operator needs no
// deletecollection on Secrets, and so that only Secrets of the bootstrap
// type go whatever else carries the label.
func deleteTokens(ctx context.Context, c client.Client, namespace, cluster string) (int, error) {
	var secrets corev1.SecretList
	if err := c.List(ctx, &secrets, client.InNamespace(namespace), client.MatchingLabels{identity.LabelCluster: cluster}); err != nil {
		return 0, fmt.Errorf("list bootstrap tokens of %q in namespace %q: %w", cluster, namespace, err)
	}
	var (
		n    int
		errs []error
	)
	for i := range secrets.Items {
		s := &secrets.Items[i]
		if s.Type != identity.BootstrapSecretType {
			continue
		}
		if err := c.Delete(ctx, s); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete bootstrap token Secret %s/%s: %w", s.Namespace, s.Name, err))
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

func (r *runner) waitGone(ctx context.Context, c client.Reader, name string, timeout time.Duration) error {
	err := wait.PollUntilContextTimeout(ctx, r.env.PollInterval, timeout, true, func(ctx context.Context) (bool, error) {
		err := c.Get(ctx, client.ObjectKey{Name: name}, &v1alpha1.Cluster{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, err
	})
	if err != nil {
		return fmt.Errorf("waiting for cluster %q to be removed: %w", name, err)
	}
	return nil
}
