package audit

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"backhaul.io/backhaul/hub/internal/hubtest"
)

// record audits one short gateway request with id.
func record(l *Logger, id string, userAgent string) {
	r := httptest.NewRequest(http.MethodGet, "/clusters/m1/api/v1/namespaces/default/configmaps/"+id, nil)
	r.Header.Set("User-Agent", userAgent)
	a := l.Gateway(r, id, "m1")
	a.Authenticated(alice)
	a.Started(http.StatusOK)
	a.End(nil)
}

func (l *testLog) written() float64 { return promtest.ToFloat64(l.Logger.metrics.written) }

func (l *testLog) dropped(reason string) float64 {
	return promtest.ToFloat64(l.Logger.metrics.dropped.WithLabelValues(reason))
}

func (l *testLog) droppedAll() float64 {
	return l.dropped(DropQueueFull) + l.dropped(DropWriteFailed) + l.dropped(DropClosed)
}

// The log rotates at MaxSize, keeps MaxBackups, and never splits an event
// across two files.
func TestRotation(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxSize, cfg.MaxBackups = 1, 2
	l := startTestLog(t, cfg, "")
	// About 1.4 KB an event: 2,500 events are about 3.5 MB, three
	// rotations of a 1 MB file, one more than is kept.
	const n = 2500
	ua := strings.Repeat("u", maxUserAgent)
	l.run()
	for i := range n {
		record(l.Logger, fmt.Sprintf("id-%05d", i), ua)
		if i%500 == 0 {
			// Let the writer catch up now and then, so the queue (10,000)
			// never fills: this test is about rotation.
			require.Eventually(t, func() bool { return len(l.queue) == 0 }, hubtest.WaitBound, time.Millisecond)
		}
	}
	l.stop(t)

	// lumberjack removes old backups in the background after a rotation.
	var files []string
	require.Eventually(t, func() bool {
		var err error
		files, err = filepath.Glob(filepath.Join(filepath.Dir(l.path), "audit*.log"))
		return err == nil && len(files) == 1+cfg.MaxBackups
	}, hubtest.WaitBound, 10*time.Millisecond, "the current file and the backups kept: %v", files)
	seen := map[string]bool{}
	for _, f := range files {
		fi, err := os.Stat(f)
		require.NoError(t, err)
		assert.LessOrEqual(t, fi.Size(), int64(1<<20), f)
		assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), f)
		for _, ev := range readEvents(t, f) { // fails on a split line
			assert.False(t, seen[string(ev.AuditID)], "event %s written twice", ev.AuditID)
			seen[string(ev.AuditID)] = true
		}
	}
	// The oldest file went; the newest events are all there.
	assert.Less(t, len(seen), n)
	for i := n - len(seen); i < n; i++ {
		assert.True(t, seen[fmt.Sprintf("id-%05d", i)], "id-%05d", i)
	}
	assert.Equal(t, float64(n), l.written())
	assert.Zero(t, l.droppedAll())
}

// A full queue drops the event and counts it; the request is not held up.
// What is queued when the log closes is still written; what comes later
// is counted.
func TestDroppedEvents(t *testing.T) {
	cfg := DefaultConfig()
	cfg.QueueSize = 2
	l := startTestLog(t, cfg, "")
	for i := range 5 { // the writer is not running: nothing is taken
		record(l.Logger, fmt.Sprintf("id-%d", i), "")
	}
	assert.Equal(t, 3.0, l.dropped(DropQueueFull))
	n, err := promtest.GatherAndCount(l.reg, "backhaul_hub_audit_queue_length")
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.NoError(t, promtest.GatherAndCompare(l.reg, strings.NewReader(`
# HELP backhaul_hub_audit_queue_length Audit events waiting for the writer.
# TYPE backhaul_hub_audit_queue_length gauge
backhaul_hub_audit_queue_length 2
`), "backhaul_hub_audit_queue_length"))

	l.run()
	evs := l.events(t) // stops the writer: the queue is flushed
	require.Len(t, evs, 2)
	assert.EqualValues(t, "id-0", evs[0].AuditID)
	assert.EqualValues(t, "id-1", evs[1].AuditID)
	assert.Equal(t, 2.0, l.written())

	record(l.Logger, "late", "")
	assert.Equal(t, 1.0, l.dropped(DropClosed))
	assert.Len(t, readEvents(t, l.path), 2)
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("no space left on device") }

// Events the sink refuses are counted, and the writer goes on.
func TestWriteFailures(t *testing.T) {
	l := startTestLog(t, DefaultConfig(), "")
	l.out = failingWriter{}
	record(l.Logger, "a", "")
	record(l.Logger, "b", "")
	l.run()
	l.stop(t)
	assert.Equal(t, 2.0, l.dropped(DropWriteFailed))
	assert.Zero(t, l.written())
}

// A path the hub cannot create fails at start-up, not at the first
// request; "-" is standard output; no path is no log.
func TestNewSinks(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Path = filepath.Join(t.TempDir(), "file", "audit.log")
	require.NoError(t, os.WriteFile(filepath.Dir(cfg.Path), nil, 0o600)) // a file where the directory should be
	_, err := New(cfg, nil, nil)
	require.ErrorContains(t, err, "audit log directory")

	l := startTestLog(t, Config{Path: Stdout, QueueSize: 1}, "")
	assert.Equal(t, os.Stdout, l.out)
	assert.Nil(t, l.closer, "stdout is not closed")

	l2, err := New(DefaultConfig(), nil, nil)
	require.NoError(t, err)
	assert.Nil(t, l2)
}
