package audit

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"
	"sigs.k8s.io/json"

	"backhaul.io/backhaul/pkg/testutil"
)

func TestMain(m *testing.M) {
	// lumberjack starts one goroutine per file on its first write and
	// never ends it (natefinch/lumberjack#56); kube-apiserver lives with it.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("gopkg.in/natefinch/lumberjack%2ev2.(*Logger).millRun"))
}

// testLog is a Logger writing to a file in a temporary directory.
type testLog struct {
	*Logger
	path   string
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
}

// newTestLog starts a Logger for cfg (Path defaults to a temporary file;
// a policy, if given, is written to a file first) with its writer running.
func newTestLog(t *testing.T, cfg Config, policy string) *testLog {
	t.Helper()
	l := startTestLog(t, cfg, policy)
	l.run()
	return l
}

// startTestLog is newTestLog without the writer.
func startTestLog(t *testing.T, cfg Config, policy string) *testLog {
	t.Helper()
	dir := t.TempDir()
	if cfg.Path == "" {
		cfg.Path = filepath.Join(dir, "audit.log")
	}
	if policy != "" {
		cfg.PolicyFile = filepath.Join(dir, "policy.yaml")
		require.NoError(t, os.WriteFile(cfg.PolicyFile, []byte(policy), 0o600))
	}
	reg := prometheus.NewRegistry()
	l, err := New(cfg, testutil.Logger(t), reg)
	require.NoError(t, err)
	require.NotNil(t, l)
	tl := &testLog{Logger: l, path: cfg.Path, reg: reg}
	t.Cleanup(func() { tl.stop(t) })
	return tl
}

func (l *testLog) run() {
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel, l.done = cancel, make(chan error, 1)
	go func() { l.done <- l.Run(ctx) }()
}

// stop ends the writer (once): what was queued is written.
func (l *testLog) stop(t *testing.T) {
	t.Helper()
	if l.cancel == nil {
		return
	}
	l.cancel()
	require.NoError(t, <-l.done)
	l.cancel = nil
}

// events stops the writer and reads the log's events.
func (l *testLog) events(t *testing.T) []auditv1.Event {
	t.Helper()
	l.stop(t)
	return readEvents(t, l.path)
}

// readEvents reads a file of audit events, strictly: every line one
// whole event.
func readEvents(t *testing.T, path string) []auditv1.Event {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	var out []auditv1.Event
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var ev auditv1.Event
		strict, err := json.UnmarshalStrict(sc.Bytes(), &ev)
		require.NoError(t, err, "line %q", sc.Text())
		require.Empty(t, strict, "line %q", sc.Text())
		out = append(out, ev)
	}
	require.NoError(t, sc.Err())
	return out
}
