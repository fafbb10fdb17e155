package recording

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	criremote "k8s.io/cri-streaming/pkg/streaming/remotecommand"
	"k8s.io/streaming/pkg/httpstream"
	"k8s.io/streaming/pkg/httpstream/spdy"

	"backhaul.io/backhaul/hub/internal/hubtest"
)

// The protocol tests run each remote command protocol between real
// implementations — the kubelet's streaming server (k8s.io/cri-streaming:
// SPDY, and websocket v4 binary and base64) and clients on the SPDY
// library client-go uses (k8s.io/streaming) and on coder/websocket; v5,
// which the kubelet does not serve, against a coder/websocket server —
// through a reverse proxy that taps the session as the gateway does, and
// compare the recording with what the client's terminal got. (client-go's
// own executors would add gorilla/websocket to the module for tests only;
// the e2e tests run kubectl itself.)

// fakeRuntime is the container: it reports two terminal sizes, writes
// text split inside its UTF-8 sequences, and reads a line of stdin.
type fakeRuntime struct{}

func (fakeRuntime) ExecInContainer(ctx context.Context, _, _, _ string, _ []string, in io.Reader, out, _ io.WriteCloser, _ bool, resize <-chan criremote.TerminalSize, _ time.Duration) error {
	for range 2 {
		select {
		case s := <-resize:
			fmt.Fprintf(out, "size %dx%d\r\n", s.Width, s.Height)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for _, p := range []string{"h\xc3", "\xa9llo, \xe4\xb8", "\x96\xe7\x95\x8c\r\n"} { // "héllo, 世界"
		if _, err := io.WriteString(out, p); err != nil {
			return err
		}
	}
	line, err := bufio.NewReader(in).ReadString('\n')
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "read %d bytes\r\n", len(line))
	return nil
}

// kubelet serves exec with the kubelet's streaming server (SPDY and
// websocket up to v4), with the API's query turned into the kubelet's
// as the API server does.
func kubelet(w http.ResponseWriter, r *http.Request) {
	q, kq := r.URL.Query(), url.Values{"command": r.URL.Query()["command"]}
	for api, kubelet := range map[string]string{"stdin": "input", "stdout": "output", "stderr": "error", "tty": "tty"} {
		if q.Get(api) == "true" {
			kq.Set(kubelet, "1")
		}
	}
	r.URL.RawQuery = kq.Encode()
	opts, err := criremote.NewOptions(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	criremote.ServeExec(w, r, fakeRuntime{}, "pod", "", "app", r.URL.Query()["command"], opts, time.Minute, 10*time.Second, criremote.SupportedStreamingProtocols)
}

const execPath = "/api/v1/namespaces/ns/pods/pod/exec?container=app&command=sh&command=-c&command=echo+hi&stdin=true&stdout=true&tty=true"

// The client's side of the session: two terminal sizes, a line of stdin.
const (
	stdinLine = "hunter2\n"
	wantOut   = "size 100x40\r\nsize 120x50\r\nhéllo, 世界\r\nread 8 bytes\r\n"
)

var resizes = []string{`{"Width":100,"Height":40}` + "\n", `{"Width":120,"Height":50}` + "\n"}

// recordingProxy proxies to member, recording each exec session with r;
// done receives once a request is fully handled (its recording closed).
func recordingProxy(t *testing.T, r *testRecorder, member string) (front string, done <-chan struct{}) {
	t.Helper()
	target, err := url.Parse(member)
	require.NoError(t, err)
	handled := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		defer func() { handled <- struct{}{} }()
		meta, ok := Describe(req.URL.Path, req.URL.Query())
		if !ok {
			http.Error(w, "not exec", http.StatusNotFound)
			return
		}
		meta.RequestID, meta.User, meta.Groups, meta.Cluster = "req-1", "alice", []string{"dev"}, "edge-1"
		s, err := r.Start(req.Context(), meta)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		defer s.Close()
		(&httputil.ReverseProxy{
			Rewrite:        func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
			ModifyResponse: s.Tap,
		}).ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, handled
}

// spdyClient runs the session over SPDY/3.1 as client-go's v4 executor
// does: one stream per channel, error first.
func spdyClient(ctx context.Context, front string) (string, error) {
	rt, err := spdy.NewRoundTripper(nil)
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, front+execPath, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set(httpstream.HeaderProtocolVersion, "v4.channel.k8s.io")
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return "", err
	}
	conn, err := rt.NewConnection(resp)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	streams := map[string]httpstream.Stream{}
	for _, kind := range []string{corev1.StreamTypeError, corev1.StreamTypeStdin, corev1.StreamTypeStdout, corev1.StreamTypeResize} {
		h := http.Header{}
		h.Set(corev1.StreamType, kind)
		if streams[kind], err = conn.CreateStream(h); err != nil {
			return "", err
		}
	}
	for _, r := range resizes {
		if _, err := io.WriteString(streams[corev1.StreamTypeResize], r); err != nil {
			return "", err
		}
	}
	if _, err := io.WriteString(streams[corev1.StreamTypeStdin], stdinLine); err != nil {
		return "", err
	}
	_ = streams[corev1.StreamTypeStdin].Close()
	out, err := io.ReadAll(streams[corev1.StreamTypeStdout])
	if err != nil {
		return "", err
	}
	status, err := io.ReadAll(streams[corev1.StreamTypeError])
	if err != nil || !bytes.Contains(status, []byte(`"Success"`)) {
		return "", fmt.Errorf("status %q: %v", status, err)
	}
	return string(out), nil
}

// wsClient runs the session over websocket subprotocol: one message per
// write, its channel first (an ASCII digit then base64 in base64
// protocols); v5 closes stdin with the close signal.
func wsClient(ctx context.Context, front, subprotocol string) (string, error) {
	b64 := strings.Contains(subprotocol, "base64")
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(front, "http")+execPath, &websocket.DialOptions{Subprotocols: []string{subprotocol}})
	if err != nil {
		return "", err
	}
	defer c.CloseNow()
	send := func(ch byte, data string) error {
		if b64 {
			return c.Write(ctx, websocket.MessageText, append([]byte{'0' + ch}, base64.StdEncoding.EncodeToString([]byte(data))...))
		}
		return c.Write(ctx, websocket.MessageBinary, append([]byte{ch}, data...))
	}
	for _, r := range resizes {
		if err := send(chanResize, r); err != nil {
			return "", err
		}
	}
	if err := send(chanStdin, stdinLine); err != nil {
		return "", err
	}
	if subprotocol == "v5.channel.k8s.io" {
		if err := c.Write(ctx, websocket.MessageBinary, []byte{255, chanStdin}); err != nil {
			return "", err
		}
	}
	var out strings.Builder
	for {
		_, msg, err := c.Read(ctx)
		if err != nil {
			return "", err
		}
		if len(msg) == 0 {
			continue
		}
		ch, data := msg[0], msg[1:]
		if b64 {
			ch -= '0'
			if data, err = base64.StdEncoding.DecodeString(string(data)); err != nil {
				return "", err
			}
		}
		switch ch {
		case chanStdout:
			out.Write(data)
		case 3:
			if !bytes.Contains(data, []byte(`"Success"`)) {
				return "", fmt.Errorf("status %q", data)
			}
			return out.String(), nil
		}
	}
}

// v5Member serves the session over v5.channel.k8s.io, which the kubelet
// does not (kube-apiserver translates it to SPDY for the kubelet).
func v5Member(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"v5.channel.k8s.io"}})
	if err != nil {
		return
	}
	defer c.CloseNow()
	ctx := r.Context()
	send := func(ch byte, data string) error {
		return c.Write(ctx, websocket.MessageBinary, append([]byte{ch}, data...))
	}
	var stdin strings.Builder
	sizes := 0
	for closed := false; !closed || sizes < 2; {
		_, msg, err := c.Read(ctx)
		if err != nil || len(msg) == 0 {
			return
		}
		switch msg[0] {
		case chanResize:
			var s struct{ Width, Height int }
			if json.Unmarshal(msg[1:], &s) != nil || send(chanStdout, fmt.Sprintf("size %dx%d\r\n", s.Width, s.Height)) != nil {
				return
			}
			sizes++
		case chanStdin:
			stdin.Write(msg[1:])
		case 255:
			closed = true
		}
	}
	for _, p := range []string{"h\xc3", "\xa9llo, \xe4\xb8", "\x96\xe7\x95\x8c\r\n", fmt.Sprintf("read %d bytes\r\n", stdin.Len())} {
		if send(chanStdout, p) != nil {
			return
		}
	}
	if send(3, `{"metadata":{},"status":"Success"}`) == nil {
		_ = c.Close(websocket.StatusNormalClosure, "")
	}
}

func TestTapRecordsEachProtocol(t *testing.T) {
	kubeletSrv := httptest.NewServer(http.HandlerFunc(kubelet))
	defer kubeletSrv.Close()
	v5Srv := httptest.NewServer(http.HandlerFunc(v5Member))
	defer v5Srv.Close()

	for _, tc := range []struct {
		name, member, protocol string
		client                 func(ctx context.Context, front string) (string, error)
	}{
		{"spdy", kubeletSrv.URL, "SPDY/3.1 v4.channel.k8s.io", spdyClient},
		{"websocket v5", v5Srv.URL, "v5.channel.k8s.io", func(ctx context.Context, front string) (string, error) {
			return wsClient(ctx, front, "v5.channel.k8s.io")
		}},
		{"websocket v4", kubeletSrv.URL, "v4.channel.k8s.io", func(ctx context.Context, front string) (string, error) {
			return wsClient(ctx, front, "v4.channel.k8s.io")
		}},
		{"websocket v4 base64", kubeletSrv.URL, "v4.base64.channel.k8s.io", func(ctx context.Context, front string) (string, error) {
			return wsClient(ctx, front, "v4.base64.channel.k8s.io")
		}},
	} {
		for _, stdin := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s stdin=%v", tc.name, stdin), func(t *testing.T) {
				rec := newTestRecorder(t, Required, stdin)
				front, done := recordingProxy(t, rec, tc.member)
				ctx, cancel := context.WithTimeout(t.Context(), hubtest.WaitBound)
				defer cancel()
				out, err := tc.client(ctx, front)
				require.NoError(t, err)
				select {
				case <-done:
				case <-ctx.Done():
					t.Fatal("the proxy did not finish the session")
				}
				require.Equal(t, wantOut, out)
				assert.Equal(t, 1.0, rec.result(t, ResultComplete))

				path := filepath.Join(rec.dir, "req-1.cast")
				h, events := readCast(t, path)
				assert.Equal(t, out, replay(events, "o"), "the recording replays what the terminal got")
				assert.Equal(t, []int{100, 40}, []int{h.Width, h.Height}, "the first size is the initial one")
				assert.Equal(t, []string{"120x50"}, kinds(events, "r"))
				assert.Equal(t, "sh -c 'echo hi'", h.Command)
				assert.Equal(t, "alice on edge-1: exec ns/pod/app", h.Title)
				assert.Equal(t, Meta{
					RequestID: "req-1", User: "alice", Groups: []string{"dev"}, Cluster: "edge-1", Namespace: "ns", Pod: "pod", Container: "app",
					Subresource: "exec", Command: []string{"sh", "-c", "echo hi"}, TTY: true, Stdin: true, Protocol: tc.protocol,
				}, h.Backhaul)
				raw, err := readFile(path)
				require.NoError(t, err)
				if stdin {
					assert.Equal(t, stdinLine, replay(events, "i"))
				} else {
					assert.Empty(t, kinds(events, "i"))
					assert.NotContains(t, raw, "hunter2", "stdin is not recorded")
				}
			})
		}
	}
}
