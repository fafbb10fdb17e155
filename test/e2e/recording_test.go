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

// recordingHub is a hub of the test's own (quotaHub's: with an agent of
// m1 dialling it) that records into dir, and kubectl through it as a
// fleet admin.
type recordingHub struct {
	*harness.Hub
	dir, kubeconfig, kubectlBin string
}

func startRecordingHub(t *testing.T, ctx context.Context, e *environment, name string, args ...string) *recordingHub {
	t.Helper()
	dir := filepath.Join(e.dir, name, "recordings")
	h := quotaHub(t, ctx, e, name, append([]string{"--recording-dir=" + dir}, args...)...)
	kubeconfig := filepath.Join(e.dir, name, "kubeconfig")
	require.NoError(t, h.WriteKubeconfig(kubeconfig, []string{"m1"}, quotaCallers["bystander"].Token))
	return &recordingHub{Hub: h, dir: dir, kubeconfig: kubeconfig, kubectlBin: e.bins.Kubectl}
}

// kubectlCmd is kubectl through the hub in the streams namespace.
func (r *recordingHub) kubectlCmd(ctx context.Context, env []string, args ...string) *exec.Cmd {
	cmd := execCommand(ctx, r.kubectlBin, append([]string{"--kubeconfig", r.kubeconfig, "-n", streamsNS}, args...)...)
	cmd.Env = append(cmd.Env, env...)
	return cmd
}

// kubectl runs kubectl through the hub with extra env and stdin.
func (r *recordingHub) kubectl(ctx context.Context, env []string, stdin string, args ...string) (stdout, stderr string, err error) {
	cmd := r.kubectlCmd(ctx, env, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var o, eb strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &eb
	err = cmd.Run()
	return o.String(), eb.String(), err
}

const recordedComplete = `backhaul_hub_recordings_total{result="complete"}`

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

// casts lists the recordings.
func (r *recordingHub) casts(t *testing.T) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(r.dir, "*.cast"))
	require.NoError(t, err)
	return m
}

// mark notes the recordings and complete ones so far, for newCast.
func (r *recordingHub) mark(t *testing.T) (before []string, complete float64) {
	return r.casts(t), hubMetric(t, r.Hub, recordedComplete)
}

// newCast waits until the hub counts one more complete recording than
// at mark and returns the one file that is new since.
func (r *recordingHub) newCast(t *testing.T, before []string, completeBefore float64) *cast {
	t.Helper()
	require.NoError(t, waitNoErr(30*time.Second, func() error {
		if n := hubMetric(t, r.Hub, recordedComplete); n != completeBefore+1 {
			return fmt.Errorf("%s is %v, want %v", recordedComplete, n, completeBefore+1)
		}
		return nil
	}))
	var added []string
	for _, p := range r.casts(t) {
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

// Typed at a prompt that does not echo: it reaches the command, and must
// not reach the recording while --recording-stdin is off.
const typedSecret = "s3cret-passw0rd"

// execTTY runs kubectl exec -it through r under a terminal of 90x30,
// types typedSecret once the command says "ready", and returns
// everything the terminal showed.
func (r *recordingHub) execTTY(t *testing.T, ctx context.Context, env []string) string {
	t.Helper()
	script := `stty -echo; echo ready; read -r pw; stty echo; echo "got ${#pw} characters"; echo "size $(stty size)"; printf 'h\303\251llo, \344\270\226\347\225\214\n'`
	cmd := r.kubectlCmd(ctx, env, "exec", "-it", streamsPod, "-c", "app", "--", "sh", "-c", script)
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 30, Cols: 90})
	require.NoError(t, err)
	defer f.Close()
	var out harness.LockedBuffer
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
	r := startRecordingHub(t, ctx, e, "hub-recording", "--recording=best-effort")
	wantProtocol := map[string]string{"websocket": "v5.channel.k8s.io", "spdy": "SPDY/3.1 v4.channel.k8s.io"}

	for _, p := range protocols {
		t.Run(p.name+" tty", func(t *testing.T) {
			before, n := r.mark(t)
			shown := r.execTTY(t, ctx, p.env)
			assert.Contains(t, shown, fmt.Sprintf("got %d characters", len(typedSecret)))
			assert.Contains(t, shown, "size 30 90")
			assert.Contains(t, shown, "héllo, 世界")

			c := r.newCast(t, before, n)
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
			assert.Equal(t, quotaCallers["bystander"].User, b.User)
			assert.Equal(t, []string{"m1", streamsNS, streamsPod, "app", "exec", wantProtocol[p.name]}, []string{b.Cluster, b.Namespace, b.Pod, b.Container, b.Subresource, b.Protocol})
			assert.True(t, b.TTY)
			assert.Equal(t, "sh", b.Command[0])
			assert.Equal(t, b.RequestID+".cast", filepath.Base(c.Path), "named by the request id")
			t.Logf("recording of %d events; kubectl showed %q", len(c.Events), shown)
		})
		t.Run(p.name+" no tty", func(t *testing.T) {
			before, n := r.mark(t)
			stdout, stderr, err := r.kubectl(ctx, p.env, "piped through the hub\n", "exec", "-i", streamsPod, "-c", "app", "--", "tr", "a-z", "A-Z")
			require.NoError(t, err, stderr)
			require.Equal(t, "PIPED THROUGH THE HUB\n", stdout)
			c := r.newCast(t, before, n)
			assert.Equal(t, stdout, c.output())
			assert.NotContains(t, c.Raw, "piped through", "stdin is not recorded")
			assert.Equal(t, []int{80, 24}, []int{c.Header.Width, c.Header.Height}, "no terminal: the default size")
		})
	}
}

func TestAttachIsRecorded(t *testing.T) {
	e, _ := requireStreams(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r := startRecordingHub(t, ctx, e, "hub-recording-attach", "--recording=best-effort")
	before, n := r.mark(t)
	stdout, stderr, err := r.kubectl(ctx, nil, "recorded ping\n", "attach", "-i", streamsPod, "-c", "app")
	require.NoError(t, err, stderr)
	assert.Contains(t, stdout, "attached: recorded ping")
	c := r.newCast(t, before, n)
	assert.Equal(t, stdout, c.output())
	assert.Equal(t, "attach", c.Header.Backhaul.Subresource)
	assert.Empty(t, c.Header.Backhaul.Command)
}

func TestRecordingRequiredRefusesWhenItCannotRecord(t *testing.T) {
	e, _ := requireStreams(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r := startRecordingHub(t, ctx, e, "hub-recording-required", "--recording=required", "--recording-stdin")
	cat := func(env []string, stdin string) (string, string, error) {
		return r.kubectl(ctx, env, stdin, "exec", "-i", streamsPod, "-c", "app", "--", "cat")
	}

	// Recorded while it can be, stdin too (--recording-stdin).
	before, n := r.mark(t)
	stdout, stderr, err := cat(nil, "typed in\n")
	require.NoError(t, err, stderr)
	assert.Equal(t, "typed in\n", stdout)
	c := r.newCast(t, before, n)
	assert.Equal(t, []string{"typed in\n"}, c.kind("i"))
	assert.Equal(t, "typed in\n", c.output())

	// The recording volume goes away: a file where the directory was.
	require.NoError(t, os.Rename(r.dir, r.dir+".gone"))
	require.NoError(t, os.WriteFile(r.dir, nil, 0o600))
	// kubectl tries websocket first and, refused, SPDY: two refusals.
	attempts := map[string]float64{"websocket": 2, "spdy": 1}
	const refused = `backhaul_hub_recordings_total{result="refused"}`
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			n := hubMetric(t, r.Hub, refused)
			stdout, stderr, err := cat(p.env, "never sent\n")
			var ee *exec.ExitError
			require.ErrorAs(t, err, &ee, "the session must be refused: stdout %q", stdout)
			assert.Empty(t, stdout)
			assert.Contains(t, stderr, "cannot record this one now", "kubectl says why")
			assert.Equal(t, n+attempts[p.name], hubMetric(t, r.Hub, refused))
			t.Logf("kubectl: %s", strings.TrimSpace(stderr))
		})
	}
	// Other requests are not sessions: they go on.
	stdout, stderr, err = r.kubectl(ctx, nil, "", "get", "pod", streamsPod, "-o", "name")
	require.NoError(t, err, stderr)
	assert.Equal(t, "pod/"+streamsPod+"\n", stdout)

	// Back again: sessions are recorded again.
	require.NoError(t, os.Remove(r.dir))
	require.NoError(t, os.Rename(r.dir+".gone", r.dir))
	before, n = r.mark(t)
	stdout, stderr, err = cat(nil, "again\n")
	require.NoError(t, err, stderr)
	assert.Equal(t, "again\n", stdout)
	assert.Equal(t, "again\n", r.newCast(t, before, n).output())
}
