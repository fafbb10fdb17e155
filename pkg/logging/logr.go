package logging

import (
	"github.com/go-logr/logr"
	"github.com/hashicorp/go-hclog"
)

// Logr adapts an hclog logger for libraries that log through logr
// (controller-runtime, client-go's klog when redirected), so a process
// keeps one log stream in one format. logr's V(1) and above are debug.
// Written here because hclog ships no logr sink.
func Logr(l hclog.Logger) logr.Logger { return logr.New(&sink{l: l}) }

type sink struct {
	l hclog.Logger
}

var _ logr.LogSink = (*sink)(nil)

func (s *sink) Init(logr.RuntimeInfo) {}

func (s *sink) Enabled(level int) bool {
	if level > 0 {
		return s.l.IsDebug()
	}
	return s.l.IsInfo()
}

func (s *sink) Info(level int, msg string, kv ...any) {
	if level > 0 {
		s.l.Debug(msg, kv...)
		return
	}
	s.l.Info(msg, kv...)
}

func (s *sink) Error(err error, msg string, kv ...any) {
	s.l.Error(msg, append(kv, "error", err)...)
}

func (s *sink) WithValues(kv ...any) logr.LogSink { return &sink{l: s.l.With(kv...)} }

func (s *sink) WithName(name string) logr.LogSink { return &sink{l: s.l.Named(name)} }
