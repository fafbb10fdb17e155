package ctl

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"backhaul.io/backhaul/pkg/version"
)

// Run executes backhaulctl with args (without the program name) and
// returns the process exit code: 0 on success, 1 on any failure, or the
// code a command chose (diagnose: 2 when it found a problem). Errors are
// printed to env.ErrOut the way kubectl prints them.
func Run(ctx context.Context, args []string, env Env) int {
	env = env.withDefaults()
	root := NewRootCommand(env)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
	var code exitCode
	if errors.As(err, &code) {
		return int(code)
	}
	fmt.Fprintln(env.ErrOut, errorMessage(err))
	var ue usageError
	if errors.As(err, &ue) && cmd != nil {
		fmt.Fprintf(env.ErrOut, "See '%s --help' for usage.\n", cmd.CommandPath())
	}
	return 1
}

// usageError marks a mistake in the command line rather than a failure.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

func usageErrorf(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// exitCode ends a run with that code and no message: the command has
// printed what it found.
type exitCode int

func (c exitCode) Error() string { return fmt.Sprintf("exit status %d", int(c)) }

// errorMessage follows kubectl: an API error returned as is prints as
// "Error from server (Reason): message", anything else as "error: ...".
func errorMessage(err error) string {
	if status, ok := err.(apierrors.APIStatus); ok {
		if reason := status.Status().Reason; reason != "" {
			return fmt.Sprintf("Error from server (%s): %s", reason, err)
		}
		return "Error from server: " + err.Error()
	}
	return "error: " + err.Error()
}

// NewRootCommand builds the command tree bound to env.
func NewRootCommand(env Env) *cobra.Command {
	env = env.withDefaults()
	o := NewGlobalOptions()
	root := &cobra.Command{
		Use:   "backhaulctl",
		Short: "backhaulctl registers member clusters with a Backhaul hub and reaches them through it",
		Long: `backhaulctl manages the clusters a Backhaul hub serves. It talks to the
hub's host cluster (the Kubernetes cluster holding the Cluster objects), with
the same kubeconfig rules as kubectl.`,
		Version:       version.Version,
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          cobra.ArbitraryArgs,
		RunE:          helpOrUnknown,
		PersistentPreRunE: func(*cobra.Command, []string) error {
			if err := o.Validate(); err != nil {
				return usageError{err}
			}
			return nil
		},
	}
	root.SetOut(env.Out)
	root.SetErr(env.ErrOut)
	root.SetVersionTemplate("backhaulctl {{.Version}}\n")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.CompletionOptions.DisableDefaultCmd = true
	o.AddFlags(root.PersistentFlags())

	r := &runner{env: env, opts: o}
	cluster := &cobra.Command{
		Use:     "cluster",
		Aliases: []string{"clusters"},
		Short:   "Add, list, inspect and remove member clusters",
		Args:    cobra.ArbitraryArgs,
		RunE:    helpOrUnknown,
	}
	cluster.AddCommand(newAddCommand(r), newListCommand(r), newGetCommand(r), newRemoveCommand(r))
	root.AddCommand(cluster, newKubeconfigCommand(r), newDiagnoseCommand(r), &cobra.Command{
		Use:   "version",
		Short: "Print the backhaulctl version",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(env.Out, "backhaulctl", version.Version)
			return err
		},
	})
	return root
}

// helpOrUnknown runs for a command group: cobra would otherwise print help
// and exit 0 for a mistyped subcommand.
func helpOrUnknown(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageErrorf("unknown command %q for %q", args[0], cmd.CommandPath())
	}
	return cmd.Help()
}

func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageErrorf("%q accepts no arguments, got %q", cmd.CommandPath(), args)
	}
	return nil
}

func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageErrorf("%s requires %s", cmd.CommandPath(), what)
		}
		return nil
	}
}

// runner carries what every command needs.
type runner struct {
	env  Env
	opts *GlobalOptions
}

func (r *runner) client() (client.Client, error) {
	return r.env.NewClient(r.opts.ClientConfig())
}

// explain adds the likely cause to errors that are otherwise cryptic.
func explain(err error) error {
	if meta.IsNoMatchError(err) {
		return fmt.Errorf("%w (is the Cluster CRD installed in the host cluster? see deploy/hub/crds)", err)
	}
	return err
}

// runE adapts a context-taking function to cobra.
func runE(f func(ctx context.Context, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error { return f(cmd.Context(), args) }
}
