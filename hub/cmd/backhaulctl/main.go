// Command backhaulctl is the Backhaul operator CLI: it adds, lists and
// removes member clusters and writes kubeconfigs that reach them through
// the hub. See hub/ctl.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"backhaul.io/backhaul/hub/ctl"
)

func main() {
	// controller-runtime complains on stderr when its logger is never set;
	// the CLI has nothing to log through it.
	ctrllog.SetLogger(logr.Discard())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := ctl.Run(ctx, os.Args[1:], ctl.Env{Out: os.Stdout, ErrOut: os.Stderr})
	stop()
	os.Exit(code)
}
