package frontend

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"backhaul.io/backhaul/hub/auth"
	"backhaul.io/backhaul/hub/internal/hubtest"
	"backhaul.io/backhaul/hub/recording"
	"backhaul.io/backhaul/hub/session"
	"backhaul.io/backhaul/pkg/testutil"
)

const execURI = "/clusters/alpha/api/v1/namespaces/ns/pods/p/exec?container=app&command=top&stdin=true&stdout=true&tty=true"

// recordingGateway is a gateway recording into dir in mode, in front of
// alpha, whose member runs a v5 exec that prints "hi there" and ends; done
// receives when a request has been fully served.
func recordingGateway(t *testing.T, mode recording.Mode) (f *frontEnds, front, dir string, reg *prometheus.Registry, done <-chan struct{}) {
	t.Helper()
	f = newFrontEnds(t, auth.AllowAuthenticated{}, "alpha")
	f.agent(t, "alpha", hubtest.HTTPAgent(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/exec") {
			_, _ = io.WriteString(w, `{"kind":"APIVersions"}`)
			return
		}
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"v5.channel.k8s.io"}})
		if err != nil {
			return
		}
		defer c.CloseNow()
		for _, m := range [][]byte{append([]byte{1}, "hi there\r\n"...), append([]byte{3}, `{"status":"Success"}`...)} {
			if c.Write(r.Context(), websocket.MessageBinary, m) != nil {
				return
			}
		}
		_ = c.Close(websocket.StatusNormalClosure, "")
	})), session.Agent{})
	reg = prometheus.NewRegistry()
	cfg := recording.DefaultConfig()
	cfg.Mode, cfg.Dir, cfg.Metrics, cfg.Log = mode, t.TempDir(), recording.NewMetrics(reg), testutil.Logger(t)
	rec, err := recording.New(cfg)
	require.NoError(t, err)
	f.gateway.cfg.Recorder = rec
	served := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mux.ServeHTTP(w, r)
		served <- struct{}{}
	}))
	t.Cleanup(srv.Close)
	return f, srv.URL, cfg.Dir, reg, served
}

func dialExec(ctx context.Context, front string) (*websocket.Conn, *http.Response, error) {
	return websocket.Dial(ctx, "ws"+strings.TrimPrefix(front, "http")+execURI, &websocket.DialOptions{
		Subprotocols: []string{"v5.channel.k8s.io"},
		HTTPHeader:   http.Header{"Authorization": {"Bearer alice-token"}},
	})
}

func TestGatewayRecordsExec(t *testing.T) {
	_, front, dir, reg, done := recordingGateway(t, recording.Required)
	ctx, cancel := context.WithTimeout(t.Context(), hubtest.WaitBound)
	defer cancel()
	c, resp, err := dialExec(ctx, front)
	require.NoError(t, err)
	defer c.CloseNow()
	var out strings.Builder
	for {
		_, m, err := c.Read(ctx)
		if err != nil {
			break
		}
		if m[0] == 1 {
			out.Write(m[1:])
		}
	}
	<-done
	assert.Equal(t, "hi there\r\n", out.String())
	assert.Equal(t, 1.0, hubtest.Counter(t, reg, "backhaul_hub_recordings_total", map[string]string{"result": recording.ResultComplete}))

	id := resp.Header.Get("Backhaul-Request-Id")
	require.NotEmpty(t, id)
	f, err := os.Open(filepath.Join(dir, id+".cast"))
	require.NoError(t, err, "the recording is named by the request id")
	defer f.Close()
	sc := bufio.NewScanner(f)
	require.True(t, sc.Scan())
	var h struct {
		Version  int
		Backhaul recording.Meta
	}
	require.NoError(t, json.Unmarshal(sc.Bytes(), &h))
	assert.Equal(t, 2, h.Version)
	assert.Equal(t, recording.Meta{
		RequestID: id, User: "alice", Groups: []string{"dev", "ops"}, Cluster: "alpha", Namespace: "ns", Pod: "p", Container: "app",
		Subresource: "exec", Command: []string{"top"}, TTY: true, Stdin: true, Protocol: "v5.channel.k8s.io",
	}, h.Backhaul)
	require.True(t, sc.Scan())
	assert.Equal(t, `[`, sc.Text()[:1])
	assert.Contains(t, sc.Text(), `"o", "hi there\r\n"]`)
}

func TestGatewayRequiredRecordingRefusesWhenItCannotRecord(t *testing.T) {
	f, front, dir, reg, done := recordingGateway(t, recording.Required)
	require.NoError(t, os.RemoveAll(dir))
	require.NoError(t, os.WriteFile(dir, nil, 0o600)) // the volume went away
	ctx, cancel := context.WithTimeout(t.Context(), hubtest.WaitBound)
	defer cancel()

	_, resp, err := dialExec(ctx, front)
	require.Error(t, err)
	<-done
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	st := hubtest.DecodeStatus(t, resp.Header.Get("Content-Type"), body)
	assert.Equal(t, whyNotRecorded, st.Message)
	assert.Equal(t, 1.0, f.errors(t, ReasonRecording))
	assert.Equal(t, 1.0, hubtest.Counter(t, reg, "backhaul_hub_recordings_total", map[string]string{"result": recording.ResultRefused}))

	// Requests that are not sessions go on.
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, front+"/clusters/alpha/api", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer alice-token")
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	_ = resp.Body.Close()
	<-done
	assert.Equal(t, http.StatusOK, resp.StatusCode)
}
