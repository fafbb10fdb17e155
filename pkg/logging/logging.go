// Package logging builds the one hclog root logger of a process. Sub-systems
// take named sub-loggers from it, with names from the constants below.
package logging

import (
	"fmt"
	"io"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// Names of sub-loggers, so log lines from one subsystem are easy to grep.
const (
	Tunnel      = "tunnel"
	Gateway     = "gateway"
	Registry    = "registry"
	Auth        = "auth"
	Admin       = "admin"
	Proxy       = "proxy"
	Connect     = "connect"
	Enroll      = "enroll"
	Status      = "status"
	Recording   = "recording"
	Propagation = "propagation"
	Audit       = "audit"
)

// Options say how a process logs.
type Options struct {
	Name   string
	Format string // text or json
	Level  string // trace, debug, info, warn, error
}

// Validate rejects unknown formats and levels.
func (o Options) Validate() error {
	switch o.Format {
	case "text", "json":
	default:
		return fmt.Errorf("log format %q: want text or json", o.Format)
	}
	if hclog.LevelFromString(o.Level) == hclog.NoLevel {
		return fmt.Errorf("log level %q: want trace, debug, info, warn or error", o.Level)
	}
	return nil
}

// New builds the root logger writing to w.
func New(o Options, w io.Writer) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:       o.Name,
		Level:      hclog.LevelFromString(strings.ToLower(o.Level)),
		JSONFormat: o.Format == "json",
		Output:     w,
		TimeFormat: "2006-01-02T15:04:05.000Z0700",
	})
}
