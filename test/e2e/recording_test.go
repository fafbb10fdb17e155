package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"backhaul.io/backhaul/test/harness"
)

// Issue 15, item 2: exec and attach sessions through the gateway are
// recorded as asciicast v2 files, over both protocols kubectl speaks.
// These tests run a hub of their own with --recording, with an agent of
// m1 dialling it, and exec into the streams pod through it.

// recordingHub starts a hub recording into dir with args, an agent of m1
// dialling it, and a kubeconfig for it as the fleet admin.
func recordingHub(t *testing.T, ctx context.Context, e *environment, name string, args ...string) (*harness.Hub, string) {
	t.Helper()
	hubBin, _, err := harness.BackhaulBinaries(ctx)
	require.NoError(t, err)
	m := e.members["m1"]
	h, err := harness.StartHub(ctx, harness.HubConfig{
		Binary: hubBin, Dir: filepath.Join(e.dir, name), HostIPs: []string{m.Netns.HostIP.String()},
		Clusters: []string{"m1"}, Callers: callers, Args: args,
	})
	if h != nil {
		t.Cleanup(h.Stop)
	}
	require.NoError(t, err)
	a, err := harness.StartAgent(ctx, h, m, harness.AgentConfig{Binary: e.agentBin, Name: "agent-m1-" + name, Cluster: "m1"})
	require.NoError(t, err)
	t.Cleanup(a.Stop)
	kubeconfig := filepath.Join(e.dir, name, "kubeconfig")
	require.NoError(t, h.WriteKubeconfig(kubeconfig, []string{"m1"}, callers["admin"].Token))
	require.NoError(t, harness.WaitFor(ctx, 30*time.Second, 200*time.Millisecond, func() error {
		out, err := execCommand(ctx, e.bins.Kubectl, "--kubeconfig", kubeconfig, "get", "--raw", "/readyz").CombinedOutput()
		if err != nil {
			return fmt.Errorf("m1 through the recording hub: %w: %s", err, out)
		}
		return nil
	}))
	return h, kubeconfig
}

// cast is a recording as a player reads it.
type cast struct {
	Header struct {
		Width, Height int
		Command       string
		Backhaul      struct {
			RequestID   string `json:"request_id"`
			User        string
			Cluster     string
			Namespace   string
			Pod         string
			Container   string
			Subresource string
			Command     []string
			TTY         bool
			Protocol    string
		}
	}
	Events []castEvent
	Raw    string
	Path   string
}

type castEvent struct {
	Kind, Data string
}

// output is what a player shows: the "o" events in order.
func (c *cast) output() string {
	var b strings.Builder
	for _, e := range c.Events {
		if e.Kind == "o" {
			b.WriteString(e.Data)
		}
	}
	return b.String()
}

func (c *cast) kind(k string) []string {
	var out []string
	for _, e := range c.Events {
		if e.Kind == k {
			out = append(out, e.Data)
		}
	}
	return out
}

func readCast(t *testing.T, path string) *cast {
	t.Helper()
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	c := &cast{Raw: string(raw), Path: path}
	sc := bufio.NewScanner(strings.NewReader(c.Raw))
	sc.Buffer(nil, 4<<20)
	require.True(t, sc.Scan())
	require.NoError(t, json.Unmarshal(sc.Bytes(), &c.Header), sc.Text())
	for sc.Scan() {
		var e []any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &e), sc.Text())
		require.Len(t, e, 3)
		c.Events = append(c.Events, castEvent{Kind: e[1].(string), Data: e[2].(string)})
	}
	return c
}

// casts lists the recordings in dir.
func casts(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.cast"))
	require.NoError(t, err)
	return m
}

// newCast waits until the hub counts one more complete recording than
// before and returns the one file that is new in dir.
func newCast(t *testing.T, h *harness.Hub, dir string, before []string, completeBefore float64) *cast {
	t.Helper()
	const complete = `backhaul_hub_recordings_total{result="complete"}`
	require.NoError(t, waitNoErr(30*time.Second, func() error {
		if n := hubMetric(t, h, complete); n != completeBefore+1 {
			return fmt.Errorf("%s is %v, want %v", complete, n, completeBefore+1)
		}
		return nil
	}))
	var added []string
	for _, p := range casts(t, dir) {
		if !slices.Contains(before, p) {
			added = append(added, p)
		}
	}
	require.Len(t, added, 1, "one new recording")
	st, err := os.Stat(added[0])
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm(), "recordings are private")
	return readCast(t, added[0])
}

// lockedBuffer collects a terminal's output while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Typed at a prompt that does not echo: it reaches the command, and must
// not reach the recording while --recording-stdin is off.
const typedSecret = "s3cret-passw0rd"

// execTTY runs kubectl exec -it under a terminal of 90x30, types
// typedSecret once the command says "ready", and returns everything the
// terminal showed.
func execTTY(t *testing.T, ctx context.Context, e *environment, kubeconfig string, env []string) string {
	t.Helper()
	script := `stty -echo; echo ready; read -r pw; stty echo; echo "got ${#pw} characters"; echo "size $(stty size)"; printf 'h\303\251llo, \344\270\226\347\225\214\n'`
	cmd := execCommand(ctx, e.bins.Kubectl, "--kubeconfig", kubeconfig, "-n", streamsNS, "exec", "-it", streamsPod, "-c", "app", "--", "sh", "-c", script)
	cmd.Env = append(cmd.Env, env...)
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 30, Cols: 90})
	require.NoError(t, err)
	defer f.Close()
	var out lockedBuffer
	read := make(chan struct{})
	go func() {
		defer close(read)
		_, _ = io.Copy(&out, f) // ends with EIO when kubectl exits
	}()
	require.NoError(t, waitNoErr(30*time.Second, func() error {
		if !strings.Contains(out.String(), "ready") {
			return errors.New("no prompt yet")
		}
		return nil
	}), out.String())
	_, err = io.WriteString(f, typedSecret+"\r")
	require.NoError(t, err)
	require.NoError(t, cmd.Wait(), out.String())
	<-read
	return out.String()
}

func TestExecIsRecorded(t *testing.T) {
	e, _ := requireStreams(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := filepath.Join(e.dir, "recordings")
	h, kubeconfig := recordingHub(t, ctx, e, "hub-recording", "--recording=best-effort", "--recording-dir="+dir)
	const complete = `backhaul_hub_recordings_total{result="complete"}`
	wantProtocol := map[string]string{"websocket": "v5.channel.k8s.io", "spdy": "SPDY/3.1 v4.channel.k8s.io"}

	for _, p := range protocols {
		t.Run(p.name+" tty", func(t *testing.T) {
			before, n := casts(t, dir), hubMetric(t, h, complete)
			shown := execTTY(t, ctx, e, kubeconfig, p.env)
			assert.Contains(t, shown, fmt.Sprintf("got %d characters", len(typedSecret)))
			assert.Contains(t, shown, "size 30 90")
			assert.Contains(t, shown, "héllo, 世界")

			c := newCast(t, h, dir, before, n)
			assert.Equal(t, shown, c.output(), "replaying the recording shows what kubectl showed")
			assert.NotContains(t, c.Raw, typedSecret, "stdin is not recorded")
			assert.Empty(t, c.kind("i"))
			// kubectl sends the terminal's size first: the initial size,
			// unless output overtook it.
			if c.Header.Width != 90 {
				assert.Equal(t, "90x30", c.kind("r")[0])
			} else {
				assert.Equal(t, 30, c.Header.Height)
			}
			b := c.Header.Backhaul
			assert.Equal(t, "fleet-admin", b.User)
			assert.Equal(t, []string{"m1", streamsNS, streamsPod, "app", "exec", wantProtocol[p.name]}, []string{b.Cluster, b.Namespace, b.Pod, b.Container, b.Subresource, b.Protocol})
			assert.True(t, b.TTY)
			assert.Equal(t, "sh", b.Command[0])
			assert.Equal(t, b.RequestID+".cast", filepath.Base(c.Path), "named by the request id")
			t.Logf("recording of %d events; kubectl showed %q", len(c.Events), shown)
		})
		t.Run(p.name+" no tty", func(t *testing.T) {
			before, n := casts(t, dir), hubMetric(t, h, complete)
			cmd := execCommand(ctx, e.bins.Kubectl, "--kubeconfig", kubeconfig, "-n", streamsNS, "exec", "-i", streamsPod, "-c", "app", "--", "tr", "a-z", "A-Z")
			cmd.Env = append(cmd.Env, p.env...)
			cmd.Stdin = strings.NewReader("piped through the hub\n")
			var stderr strings.Builder
			cmd.Stderr = &stderr
			stdout, err := cmd.Output()
			require.NoError(t, err, stderr.String())
			require.Equal(t, "PIPED THROUGH THE HUB\n", string(stdout))
			c := newCast(t, h, dir, before, n)
			assert.Equal(t, string(stdout), c.output())
			assert.NotContains(t, c.Raw, "piped through", "stdin is not recorded")
			assert.Equal(t, []int{80, 24}, []int{c.Header.Width, c.Header.Height}, "no terminal: the default size")
		})
	}
}

func TestAttachIsRecorded(t *testing.T) {
	e, _ := requireStreams(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := filepath.Join(e.dir, "recordings-attach")
	h, kubeconfig := recordingHub(t, ctx, e, "hub-recording-attach", "--recording=best-effort", "--recording-dir="+dir)
	before, n := casts(t, dir), hubMetric(t, h, `backhaul_hub_recordings_total{result="complete"}`)
	cmd := execCommand(ctx, e.bins.Kubectl, "--kubeconfig", kubeconfig, "-n", streamsNS, "attach", "-i", streamsPod, "-c", "app")
	cmd.Stdin = strings.NewReader("recorded ping\n")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	require.NoError(t, err, stderr.String())
	assert.Contains(t, string(stdout), "attached: recorded ping")
	c := newCast(t, h, dir, before, n)
	assert.Equal(t, string(stdout), c.output())
	assert.Equal(t, "attach", c.Header.Backhaul.Subresource)
	assert.Empty(t, c.Header.Backhaul.Command)
}

func TestRecordingRequiredRefusesWhenItCannotRecord(t *testing.T) {
	e, _ := requireStreams(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := filepath.Join(e.dir, "recordings-required")
	h, kubeconfig := recordingHub(t, ctx, e, "hub-recording-required", "--recording=required", "--recording-dir="+dir, "--recording-stdin")
	const complete = `backhaul_hub_recordings_total{result="complete"}`
	run := func(env []string, stdin string) (string, string, error) {
		cmd := execCommand(ctx, e.bins.Kubectl, "--kubeconfig", kubeconfig, "-n", streamsNS, "exec", "-i", streamsPod, "-c", "app", "--", "cat")
		cmd.Env = append(cmd.Env, env...)
		cmd.Stdin = strings.NewReader(stdin)
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		return stdout.String(), stderr.String(), err
	}

	// Recorded while it can be, stdin too (--recording-stdin).
	before, n := casts(t, dir), hubMetric(t, h, complete)
	stdout, stderr, err := run(nil, "typed in\n")
	require.NoError(t, err, stderr)
	assert.Equal(t, "typed in\n", stdout)
	c := newCast(t, h, dir, before, n)
	assert.Equal(t, []string{"typed in\n"}, c.kind("i"))
	assert.Equal(t, "typed in\n", c.output())

	// The recording volume goes away: a file where the directory was.
	require.NoError(t, os.Rename(dir, dir+".gone"))
	require.NoError(t, os.WriteFile(dir, nil, 0o600))
	// kubectl tries websocket first and, refused, SPDY: two refusals.
	attempts := map[string]float64{"websocket": 2, "spdy": 1}
	const refused = `backhaul_hub_recordings_total{result="refused"}`
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			n := hubMetric(t, h, refused)
			stdout, stderr, err := run(p.env, "never sent\n")
			var ee *exec.ExitError
			require.ErrorAs(t, err, &ee, "the session must be refused: stdout %q", stdout)
			assert.Empty(t, stdout)
			assert.Contains(t, stderr, "cannot record this one now", "kubectl says why")
			assert.Equal(t, n+attempts[p.name], hubMetric(t, h, refused))
			t.Logf("kubectl: %s", strings.TrimSpace(stderr))
		})
	}
	// Other requests are not sessions: they go on.
	out, err := execCommand(ctx, e.bins.Kubectl, "--kubeconfig", kubeconfig, "-n", streamsNS, "get", "pod", streamsPod, "-o", "name").CombinedOutput()
	require.NoError(t, err, string(out))
	assert.Equal(t, "pod/"+streamsPod+"\n", string(out))

	// Back again: sessions are recorded again.
	require.NoError(t, os.Remove(dir))
	require.NoError(t, os.Rename(dir+".gone", dir))
	before, n = casts(t, dir), hubMetric(t, h, complete)
	stdout, stderr, err = run(nil, "again\n")
	require.NoError(t, err, stderr)
	assert.Equal(t, "again\n", stdout)
	assert.Equal(t, "again\n", newCast(t, h, dir, before, n).output())
}
