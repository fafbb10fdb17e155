// Command backhaul-agent runs in a member cluster or edge site, dials out to
// the hub and serves the streams the hub opens.
package main

import (
	"context"
	"fmt"

	"github.com/hashicorp/go-hclog"

	"backhaul.io/backhaul/agent"
	"backhaul.io/backhaul/pkg/command"
	"backhaul.io/backhaul/pkg/version"
)

func main() {
	opts := agent.NewOptions()
	command.Main("backhaul-agent", opts, func(ctx context.Context, log hclog.Logger) error {
		cfg, err := opts.Config(log)
		if err != nil {
			return &command.ConfigError{Err: err}
		}
		a, err := agent.New(cfg)
		if err != nil {
			return fmt.Errorf("cannot start: %w", err)
		}
		log.Info("starting", "version", version.Version, "cluster", opts.Cluster, "hub", opts.HubURL)
		return a.Run(ctx)
	})
}
