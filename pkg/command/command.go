// Package command is what the main packages of Backhaul's daemons share:
// flags with -version, validation, one root logger, a context that ends on
// SIGINT or SIGTERM, and exit codes (2: bad configuration, 1: failure), so
// each main is its options and a run function.
package command

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/hashicorp/go-hclog"

	"backhaul.io/backhaul/pkg/logging"
	"backhaul.io/backhaul/pkg/version"
)

// Options are a daemon's command-line settings.
type Options interface {
	Flags(fs *flag.FlagSet)
	Validate() error
	Logging() logging.Options
}

// ConfigError marks a configuration that could not be loaded: the
// process exits 2, as for flags that do not validate.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// VersionFlag is the flag every daemon adds after its options' flags.
func VersionFlag(fs *flag.FlagSet) *bool {
	return fs.Bool("version", false, "print the version and exit")
}

// Main parses the process's flags into opts and runs run until it returns
// or the process is told to stop, then exits with its outcome.
func Main(name string, opts Options, run func(ctx context.Context, log hclog.Logger) error) {
	fs := flag.NewFlagSet(name, flag.ExitOnError)
	opts.Flags(fs)
	showVersion := VersionFlag(fs)
	_ = fs.Parse(os.Args[1:])
	if *showVersion {
		fmt.Println(name, version.Version)
		return
	}
	if err := opts.Validate(); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(2)
	}
	log := logging.New(opts.Logging(), os.Stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, log)
	stop()
	var ce *ConfigError
	switch {
	case err == nil:
	case errors.As(err, &ce):
		log.Error("bad configuration", "error", ce.Err)
		os.Exit(2)
	default:
		log.Error("stopped", "error", err)
		os.Exit(1)
	}
}
