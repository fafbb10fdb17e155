// Command backhaul-hub is the cloud side of Backhaul: agents dial in, callers
// reach member clusters through https://HUB/clusters/NAME/.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"backhaul.io/backhaul/hub"
	"backhaul.io/backhaul/pkg/logging"
	"backhaul.io/backhaul/pkg/version"
)

func main() {
	opts := hub.NewOptions()
	fs := flag.NewFlagSet("backhaul-hub", flag.ExitOnError)
	opts.Flags(fs)
	showVersion := fs.Bool("version", false, "print the version and exit")
	_ = fs.Parse(os.Args[1:])
	if *showVersion {
		fmt.Println("backhaul-hub", version.Version)
		return
	}
	if err := opts.Validate(); err != nil {
		fmt.Fprintf(os.Stderr, "backhaul-hub: %v\n", err)
		os.Exit(2)
	}
	log := logging.New(opts.Log, os.Stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg, err := opts.Config(ctx, log)
	if err != nil {
		log.Error("bad configuration", "error", err)
		os.Exit(2)
	}
	srv, err := hub.New(cfg)
	if err != nil {
		log.Error("cannot start", "error", err)
		os.Exit(1)
	}
	log.Info("starting", "version", version.Version)
	if err := srv.Run(ctx); err != nil {
		log.Error("hub stopped", "error", err)
		os.Exit(1)
	}
}
