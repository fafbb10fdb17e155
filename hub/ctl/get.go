package ctl

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
)

func newListCommand(r *runner) *cobra.Command {
	var output, selector string
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List member clusters with their tunnel and readiness status",
		Example: `  backhaulctl cluster list
  backhaulctl cluster ls -l region=eu -o wide`,
		Args: noArgs,
		RunE: runE(func(ctx context.Context, _ []string) error {
			return r.list(ctx, selector, output)
		}),
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: json, yaml, wide or name")
	cmd.Flags().StringVarP(&selector, "selector", "l", "", "label selector, e.g. region=eu,tier!=edge")
	return cmd
}

func newGetCommand(r *runner) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "get NAME [NAME...]",
		Short: "Show member clusters by name",
		Example: `  backhaulctl cluster get edge-1
  backhaulctl cluster get edge-1 -o yaml`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageErrorf("%s requires a cluster name", cmd.CommandPath())
			}
			return nil
		},
		RunE: runE(func(ctx context.Context, names []string) error {
			return r.get(ctx, names, output)
		}),
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: json, yaml, wide or name")
	return cmd
}

func (r *runner) list(ctx context.Context, selector, output string) error {
	if err := validateOutput(output); err != nil {
		return err
	}
	sel, err := labels.Parse(selector)
	if err != nil {
		return usageErrorf("--selector: %w", err)
	}
	c, err := r.client()
	if err != nil {
		return err
	}
	items, err := listClusters(ctx, c, sel)
	if err != nil {
		return err
	}
	if len(items) == 0 && (output == outputTable || output == outputWide) {
		_, err := fmt.Fprintln(r.env.ErrOut, "No clusters found.")
		return err
	}
	return clusterPrinter{format: output, now: r.env.Now()}.print(r.env.Out, items, false)
}

func listClusters(ctx context.Context, c client.Reader, sel labels.Selector) ([]v1alpha1.Cluster, error) {
	var list v1alpha1.ClusterList
	if err := c.List(ctx, &list, client.MatchingLabelsSelector{Selector: sel}); err != nil {
		return nil, explain(err)
	}
	slices.SortFunc(list.Items, func(a, b v1alpha1.Cluster) int { return strings.Compare(a.Name, b.Name) })
	return list.Items, nil
}

// get prints the clusters it finds and then fails for those it does not,
// as kubectl does. A single missing name returns the API error itself so
// it prints as "Error from server (NotFound): ...".
func (r *runner) get(ctx context.Context, names []string, output string) error {
	if err := validateOutput(output); err != nil {
		return err
	}
	c, err := r.client()
	if err != nil {
		return err
	}
	var (
		found []v1alpha1.Cluster
		errs  []error
	)
	for _, name := range names {
		var cl v1alpha1.Cluster
		if err := c.Get(ctx, client.ObjectKey{Name: name}, &cl); err != nil {
			errs = append(errs, explain(err))
			continue
		}
		found = append(found, cl)
	}
	if len(found) > 0 {
		p := clusterPrinter{format: output, now: r.env.Now()}
		if err := p.print(r.env.Out, found, len(names) == 1); err != nil {
			return err
		}
	}
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	default:
		for _, err := range errs[:len(errs)-1] {
			fmt.Fprintln(r.env.ErrOut, errorMessage(err))
		}
		return errs[len(errs)-1]
	}
}
