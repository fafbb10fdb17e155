package tunnel

import (
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/yamux"
)

// Config tunes a session. Both sides should use the same keepalive figures.
type Config struct {
	// KeepAliveInterval is how often each side pings; keep it below the idle
	// timeout of load balancers between agent and hub (often 30-60 s).
	KeepAliveInterval time.Duration
	// KeepAliveTimeout is how long a ping or a write may go unanswered before
	// the session is declared dead.
	KeepAliveTimeout time.Duration
	// StreamWindow is the largest per-stream receive window. Larger windows
	// let one stream fill a long fat link (one stream moves at most
	// StreamWindow per round trip); a reader that stalls holds up to this
	// much buffered data per stream in this process's memory, and there
	// may be thousands of streams. See DefaultStreamWindow.
	StreamWindow uint32
	// AcceptBacklog bounds streams opened by the peer but not yet accepted.
	AcceptBacklog int
	// HeaderTimeout bounds how long an accepted stream may take to send its
	// request, and an opener to receive its reply beyond the dial timeout.
	HeaderTimeout time.Duration
	// DefaultDialTimeout is used when a request carries no timeout.
	DefaultDialTimeout time.Duration
	// Logger receives yamux's own messages and the session's.
	Logger hclog.Logger
}

// DefaultConfig notices a dead peer within 25 s on both sides.
func DefaultConfig() *Config {
	return &Config{
		KeepAliveInterval:  15 * time.Second,
		KeepAliveTimeout:   10 * time.Second,
		StreamWindow:       DefaultStreamWindow,
		AcceptBacklog:      1024,
		HeaderTimeout:      10 * time.Second,
		DefaultDialTimeout: 10 * time.Second,
		Logger:             hclog.NewNullLogger(),
	}
}

// Validate reports settings that cannot work.
func (c *Config) Validate() error {
	var errs []error
	if c.KeepAliveInterval <= 0 {
		errs = append(errs, errors.New("keepalive interval must be positive"))
	}
	if c.KeepAliveTimeout <= 0 {
		errs = append(errs, errors.New("keepalive timeout must be positive"))
	}
	if c.StreamWindow < MinStreamWindow {
		errs = append(errs, fmt.Errorf("stream window %d is below yamux's minimum of 256 KiB", c.StreamWindow))
	}
	if c.StreamWindow > MaxStreamWindow {
		errs = append(errs, fmt.Errorf("stream window %d is above %d: one stalled reader would hold that much memory", c.StreamWindow, MaxStreamWindow))
	}
	if c.AcceptBacklog <= 0 {
		errs = append(errs, errors.New("accept backlog must be positive"))
	}
	if c.HeaderTimeout <= 0 || c.DefaultDialTimeout <= 0 {
		errs = append(errs, errors.New("header and dial timeouts must be positive"))
	}
	if c.Logger == nil {
		errs = append(errs, errors.New("logger is required"))
	}
	return errors.Join(errs...)
}

// yamux is the yamux configuration; its logger writes to log.
func (c *Config) yamux(log io.Writer) *yamux.Config {
	y := yamux.DefaultConfig()
	y.AcceptBacklog = c.AcceptBacklog
	// Sessions ping from a timer of their own (keepalive.go).
	y.EnableKeepAlive = false
	y.KeepAliveInterval = c.KeepAliveInterval
	// yamux waits ConnectionWriteTimeout for a ping's answer, and for writes.
	y.ConnectionWriteTimeout = c.KeepAliveTimeout
	y.MaxStreamWindowSize = c.StreamWindow
	y.StreamOpenTimeout = c.HeaderTimeout
	y.StreamCloseTimeout = 5 * time.Minute
	y.LogOutput = nil
	y.Logger = stdlog.New(log, "", 0)
	return y
}

// yamuxLog is where a session's yamux logs. yamux logs at [ERR] whatever
// its read and write loops see fail, and that includes what shutting the
// session down does to them: closing the conn cancels the websocket's
// pending read ("context canceled") and fails a frame already queued
// ("use of closed network connection"). So once the session has shut down,
// for whatever reason, what yamux says is the aftermath and goes out at
// DEBUG. What made it shut down (a dead keepalive, a broken conn, a
// protocol error) is logged before, at yamux's own level.
type yamuxLog struct {
	mux  atomic.Pointer[yamux.Session] // set once the session exists
	live io.Writer
	done io.Writer
}

func newYamuxLog(l hclog.Logger) *yamuxLog {
	l = l.Named("yamux")
	return &yamuxLog{
		live: l.StandardWriter(&hclog.StandardLoggerOptions{InferLevels: true}),
		done: l.StandardWriter(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug}),
	}
}

func (w *yamuxLog) Write(p []byte) (int, error) {
	if m := w.mux.Load(); m != nil && m.IsClosed() {
		return w.done.Write(p)
	}
	return w.live.Write(p)
}
