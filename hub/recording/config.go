package recording

import (
	"errors"
	"fmt"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
)

// Mode says whether sessions are recorded and what a failure to record
// one does to it. It is a flag.Value.
type Mode string

const (
	// Off records nothing.
	Off Mode = "off"
	// BestEffort records every session it can; a failure is logged and
	// counted and the session goes on unrecorded (or partly recorded).
	BestEffort Mode = "best-effort"
	// Required refuses a session whose recording cannot be created and
	// ends one whose recording fails.
	Required Mode = "required"
)

func (m *Mode) String() string { return string(*m) }

// Set parses off, best-effort or required.
func (m *Mode) Set(s string) error {
	switch Mode(s) {
	case Off, BestEffort, Required:
		*m = Mode(s)
		return nil
	}
	return fmt.Errorf("%q: want off, best-effort or required", s)
}

// DefaultMaxQueued is the default bound on one session's events waiting
// for the disk.
const DefaultMaxQueued = 1 << 20

// Config is what a Recorder needs.
type Config struct {
	Mode Mode
	// Dir holds the recordings, DIR/REQUEST-ID.cast; New creates it
	// (0700: recordings show what people typed and saw).
	Dir string
	// Stdin records what the caller sends on stdin as "i" events. Off by
	// default: stdin carries passwords typed at prompts that do not echo.
	Stdin bool
	// MaxQueued bounds the bytes of one session's events waiting to be
	// written. Past it a best-effort recording is abandoned and a required
	// one holds the session back until the disk catches up.
	MaxQueued int
	Metrics   *Metrics
	Log       hclog.Logger
}

// DefaultConfig records nothing until Mode and Dir are set.
func DefaultConfig() Config {
	return Config{Mode: Off, MaxQueued: DefaultMaxQueued}
}

// Validate checks the settings (Metrics and Log are needed only when
// recording).
func (c Config) Validate() error {
	switch c.Mode {
	case Off:
		return nil
	case BestEffort, Required:
	default:
		return fmt.Errorf("recording mode %q: want off, best-effort or required", c.Mode)
	}
	if c.Dir == "" {
		return errors.New("recording: a directory is required when recording is on")
	}
	if c.MaxQueued < 4<<10 {
		return errors.New("recording: MaxQueued must be at least 4 KiB")
	}
	if c.Metrics == nil || c.Log == nil {
		return errors.New("recording: Metrics and Log are required")
	}
	return nil
}

// Results of a recording, the result label of
// backhaul_hub_recordings_total.
const (
	// ResultComplete: the whole session is in its file.
	ResultComplete = "complete"
	// ResultFailed: best-effort, the file could not be created or the
	// recording stopped early (the file says why in a marker); the session
	// went on.
	ResultFailed = "failed"
	// ResultRefused: required, the file could not be created and the
	// session was refused.
	ResultRefused = "refused"
	// ResultEnded: required, the recording failed during the session and
	// ended it.
	ResultEnded = "ended"
)

// Metrics are recording's series.
type Metrics struct {
	recordings *prometheus.CounterVec
}

// NewMetrics registers recording's series on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{recordings: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "backhaul_hub_recordings_total",
		Help: "exec and attach sessions through the gateway by what became of their recording (--recording): complete, failed (best-effort: the session went on without a whole recording), refused (required: no file, no session), ended (required: the recording failed and ended the session).",
	}, []string{"result"})}
	for _, r := range []string{ResultComplete, ResultFailed, ResultRefused, ResultEnded} {
		m.recordings.WithLabelValues(r)
	}
	reg.MustRegister(m.recordings)
	return m
}

func (m *Metrics) recorded(result string) { m.recordings.WithLabelValues(result).Inc() }
