// Command backhaul-hub is the cloud side of Backhaul: agents dial in, callers
// reach member clusters through https://HUB/clusters/NAME/.
package main

import (
	"context"
	"fmt"

	"github.com/hashicorp/go-hclog"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"backhaul.io/backhaul/hub"
	"backhaul.io/backhaul/pkg/command"
	"backhaul.io/backhaul/pkg/logging"
	"backhaul.io/backhaul/pkg/version"
)

func main() {
	opts := hub.NewOptions()
	command.Main("backhaul-hub", opts, func(ctx context.Context, log hclog.Logger) error {
		// controller-runtime's packages (the manager, certwatcher) log
		// through its process-wide logger; unset, the first use prints a
		// stack trace instead of the message.
		ctrllog.SetLogger(logging.Logr(log.Named("controller")))
		cfg, err := opts.Config(ctx, log)
		if err != nil {
			return &command.ConfigError{Err: err}
		}
		srv, err := hub.New(cfg)
		if err != nil {
			return fmt.Errorf("cannot start: %w", err)
		}
		log.Info("starting", "version", version.Version)
		return srv.Run(ctx)
	})
}
