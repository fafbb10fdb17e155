package recording

import (
	"bufio"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"backhaul.io/backhaul/hub/internal/hubtest"
	"backhaul.io/backhaul/pkg/testutil"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// client-go's and klog's process-wide workers, started by the
		// protocol tests' real clients.
		goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

// testRecorder records into a new directory in mode.
type testRecorder struct {
	*Recorder
	dir     string
	metrics *prometheus.Registry
}

func newTestRecorder(t testing.TB, mode Mode, stdin bool) *testRecorder {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg := DefaultConfig()
	cfg.Mode, cfg.Dir, cfg.Stdin = mode, t.TempDir(), stdin
	cfg.Metrics, cfg.Log = NewMetrics(reg), testutil.Logger(t)
	r, err := New(cfg)
	require.NoError(t, err)
	return &testRecorder{Recorder: r, dir: cfg.Dir, metrics: reg}
}

func (r *testRecorder) result(t *testing.T, result string) float64 {
	return hubtest.Counter(t, r.metrics, "backhaul_hub_recordings_total", map[string]string{"result": result})
}

// castEvent is one event line of a recording.
type castEvent struct {
	At   float64
	Kind string
	Data string
}

// readCast parses a recording: its header and events.
func readCast(t *testing.T, path string) (header, []castEvent) {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	require.True(t, sc.Scan(), "a header line")
	var h header
	require.NoError(t, json.Unmarshal(sc.Bytes(), &h), sc.Text())
	require.Equal(t, 2, h.Version)
	var events []castEvent
	last := 0.0
	for sc.Scan() {
		var raw []any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &raw), sc.Text())
		require.Len(t, raw, 3, sc.Text())
		e := castEvent{At: raw[0].(float64), Kind: raw[1].(string), Data: raw[2].(string)}
		require.GreaterOrEqual(t, e.At, last, "event times go forward: %s", sc.Text())
		last = e.At
		events = append(events, e)
	}
	require.NoError(t, sc.Err())
	return h, events
}

// replay is what a player shows of kind: the events' data in order.
func replay(events []castEvent, kind string) string {
	var b strings.Builder
	for _, e := range events {
		if e.Kind == kind {
			b.WriteString(e.Data)
		}
	}
	return b.String()
}

func kinds(events []castEvent, kind string) []string {
	var out []string
	for _, e := range events {
		if e.Kind == kind {
			out = append(out, e.Data)
		}
	}
	return out
}

func readFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	return string(b), err
}
