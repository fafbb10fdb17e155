// Command backhaul-agent runs in a member cluster or edge site, dials out to
// the hub and serves the streams the hub opens.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"backhaul.io/backhaul/agent"
	"backhaul.io/backhaul/pkg/logging"
	"backhaul.io/backhaul/pkg/version"
)

func main() {
	opts := agent.NewOptions()
	fs := flag.NewFlagSet("backhaul-agent", flag.ExitOnError)
	opts.Flags(fs)
	showVersion := fs.Bool("version", false, "print the version and exit")
	_ = fs.Parse(os.Args[1:])
	if *showVersion {
		fmt.Println("backhaul-agent", version.Version)
		return
	}
	if err := opts.Validate(); err != nil {
		fmt.Fprintf(os.Stderr, "backhaul-agent: %v\n", err)
		os.Exit(2)
	}
	log := logging.New(opts.Log, os.Stderr)
	cfg, err := opts.Config(log)
	if err != nil {
		log.Error("bad configuration", "error", err)
		os.Exit(2)
	}
	a, err := agent.New(cfg)
	if err != nil {
		log.Error("cannot start", "error", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log.Info("starting", "version", version.Version, "cluster", opts.Cluster, "hub", opts.HubURL)
	if err := a.Run(ctx); err != nil {
		log.Error("agent stopped", "error", err)
		os.Exit(1)
	}
}
