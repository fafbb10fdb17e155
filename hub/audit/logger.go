package audit

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/natefinch/lumberjack.v2"
	auditinternal "k8s.io/apiserver/pkg/apis/audit"
	"k8s.io/apiserver/pkg/audit"
	"k8s.io/apiserver/pkg/audit/policy"

	"backhaul.io/backhaul/pkg/logging"
)

// maxBatch bounds the bytes of events the writer hands the sink at once.
// A batch is whole lines in one Write, so a rotation never splits an
// event across two files.
const maxBatch = 256 << 10

// Logger is the audit log: it decides by policy what each request records
// (Gateway, Connect) and writes the events in the background (Run). A nil
// *Logger records nothing.
type Logger struct {
	policy  audit.PolicyRuleEvaluator
	out     io.Writer
	closer  io.Closer // nil for stdout
	queue   chan []byte
	metrics *Metrics
	log     hclog.Logger
	limited *logging.Limited

	// mu orders enqueueing against the final flush: once closed is set
	// (under the write lock), no event enters the queue uncounted.
	mu     sync.RWMutex
	closed bool
}

// New returns the audit log cfg describes, or nil when it is off. The file
// is created now (mode 0600, as kube-apiserver does), so a path the hub
// cannot write fails start-up rather than the first request.
func New(cfg Config, log hclog.Logger, reg prometheus.Registerer) (*Logger, error) {
	if !cfg.Enabled() {
		return nil, nil
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p, err := cfg.policy()
	if err != nil {
		return nil, err
	}
	l := &Logger{
		policy: policy.NewPolicyRuleEvaluator(p),
		queue:  make(chan []byte, cfg.QueueSize),
		log:    log,
		// A slow disk or a full one would otherwise log once per request.
		limited: logging.NewLimited(log, 10*time.Second, 1),
	}
	if cfg.Path == Stdout {
		l.out = os.Stdout
	} else {
		if err := ensureFile(cfg.Path); err != nil {
			return nil, err
		}
		lj := &lumberjack.Logger{Filename: cfg.Path, MaxSize: cfg.MaxSize, MaxBackups: cfg.MaxBackups, MaxAge: cfg.MaxAge, Compress: cfg.Compress}
		l.out, l.closer = lj, lj
	}
	l.metrics = NewMetrics(reg, func() int { return len(l.queue) })
	log.Info("audit log", "path", cfg.Path, "policy", cmp.Or(cfg.PolicyFile, "default (Metadata for every request)"), "queue", cfg.QueueSize)
	return l, nil
}

func ensureFile(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("audit log directory: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	return f.Close()
}

// Run writes queued events until ctx ends, then writes what is still
// queued and closes the file. Events that come later are dropped (and
// counted): run it on a context that ends after the listeners close.
func (l *Logger) Run(ctx context.Context) error {
	if l == nil {
		return nil
	}
	var batch bytes.Buffer
	for {
		select {
		case <-ctx.Done():
			l.mu.Lock()
			l.closed = true
			l.mu.Unlock()
			l.drain(&batch)
			if l.closer != nil {
				return l.closer.Close()
			}
			return nil
		case b := <-l.queue:
			batch.Write(b)
			l.write(&batch, 1+l.take(&batch))
		}
	}
}

// take appends queued events to batch up to maxBatch without waiting,
// and says how many.
func (l *Logger) take(batch *bytes.Buffer) int {
	n := 0
	for batch.Len() < maxBatch {
		select {
		case b := <-l.queue:
			batch.Write(b)
			n++
		default:
			return n
		}
	}
	return n
}

// drain writes everything queued (after close: nothing more comes).
func (l *Logger) drain(batch *bytes.Buffer) {
	for {
		n := l.take(batch)
		if n == 0 {
			return
		}
		l.write(batch, n)
	}
}

// write hands batch, n events, to the sink in one Write.
func (l *Logger) write(batch *bytes.Buffer, n int) {
	defer batch.Reset()
	if _, err := l.out.Write(batch.Bytes()); err != nil {
		l.metrics.drop(DropWriteFailed, n)
		l.limited.Warn("cannot write the audit log: events dropped", "events", n, "error", err)
		return
	}
	l.metrics.wrote(n)
}

// enqueue hands one JSON line to the writer, or drops it.
func (l *Logger) enqueue(line []byte) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		l.metrics.drop(DropClosed, 1)
		return
	}
	select {
	case l.queue <- line:
	default:
		l.metrics.drop(DropQueueFull, 1)
		l.limited.Warn("audit queue full: event dropped (the audit log is written slower than requests come)", "queue", cap(l.queue))
	}
}

// evaluate is the policy's level and omitted stages for attrs.
func (l *Logger) evaluate(attrs attributes) (auditinternal.Level, []auditinternal.Stage) {
	rac := l.policy.EvaluatePolicyRule(&attrs.AttributesRecord)
	return rac.Level, rac.OmitStages
}
