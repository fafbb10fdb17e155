package recording

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"backhaul.io/backhaul/pkg/testutil"
)

var testMeta = Meta{RequestID: "0123abcd", User: "alice", Cluster: "edge-1", Namespace: "ns", Pod: "p", Subresource: "exec", Command: []string{"sh"}}

// upgraded is a member's 101 answer whose body is one end of a pipe; the
// test plays the member at the other.
func upgraded(t testing.TB, protocol string) (*http.Response, net.Conn) {
	hub, member := net.Pipe()
	t.Cleanup(func() { _ = hub.Close(); _ = member.Close() })
	h := http.Header{}
	h.Set("Upgrade", "websocket")
	h.Set("Sec-WebSocket-Protocol", protocol)
	return &http.Response{StatusCode: http.StatusSwitchingProtocols, Header: h, Body: hub}, member
}

// stdoutMessage is a member's websocket message on stdout.
func stdoutMessage(s string) []byte {
	return wsFrame(bitFin|opBinary, nil, append([]byte{chanStdout}, s...))
}

// send writes b as the member (a pipe write waits for the read).
func send(member net.Conn, b []byte) <-chan error {
	done := make(chan error, 1)
	go func() { _, err := member.Write(b); done <- err }()
	return done
}

// writeTo swaps the session's file for f before it is tapped (a full
// disk, a pipe nobody reads).
func writeTo(t *testing.T, s *Session, f *os.File) {
	require.NoError(t, s.file.Close())
	require.NoError(t, os.Remove(s.file.Name()))
	s.file = f
}

// waitFailed waits until the recording has stopped for an error.
func waitFailed(s *Session) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.err == nil {
		s.cond.Wait()
	}
	return s.err
}

func TestRecordingRequiredRefusesWhenItCannotCreate(t *testing.T) {
	for _, mode := range []Mode{Required, BestEffort} {
		t.Run(string(mode), func(t *testing.T) {
			r := newTestRecorder(t, mode, false)
			// The directory goes away after start-up (a volume lost).
			require.NoError(t, os.RemoveAll(r.dir))
			require.NoError(t, os.WriteFile(r.dir, nil, 0o600))
			s, err := r.Start(t.Context(), testMeta)
			assert.Nil(t, s)
			if mode == Required {
				assert.ErrorIs(t, err, ErrCannotRecord)
				assert.Equal(t, 1.0, r.result(t, ResultRefused))
			} else {
				assert.NoError(t, err, "best-effort: the session goes on")
				assert.Equal(t, 1.0, r.result(t, ResultFailed))
			}
			s.Close() // a nil Session is inert
			require.NoError(t, s.Tap(&http.Response{StatusCode: http.StatusSwitchingProtocols}))
		})
	}
}

func TestNewChecksItsDirectory(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	cfg := DefaultConfig()
	cfg.Mode, cfg.Dir, cfg.Metrics = Required, filepath.Join(file, "recordings"), NewMetrics(prometheus.NewRegistry())
	_, err := New(cfg)
	assert.ErrorContains(t, err, "Log", "no logger")
	cfg.Log = testutil.Logger(t)
	_, err = New(cfg)
	assert.ErrorContains(t, err, "recording directory", "a directory under a file")

	cfg.Dir = filepath.Join(t.TempDir(), "a", "b")
	r, err := New(cfg)
	require.NoError(t, err)
	st, err := os.Stat(cfg.Dir)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), st.Mode().Perm(), "made, private")
	for _, id := range []string{"", "../escape", "a/b", ".hidden", strings.Repeat("x", 65)} {
		_, err := r.Start(t.Context(), Meta{RequestID: id})
		assert.ErrorIs(t, err, ErrCannotRecord, "%q", id)
	}

	cfg.Mode = Off
	r, err = New(cfg)
	assert.NoError(t, err)
	assert.Nil(t, r, "off records nothing")
	s, err := r.Start(t.Context(), testMeta)
	assert.Nil(t, s)
	assert.NoError(t, err)
}

// tappedSession is a session of a recorder in mode whose file is f,
// tapping a v5 exec whose member the test plays.
func tappedSession(t *testing.T, mode Mode, f *os.File, maxQueued int) (*testRecorder, *Session, *http.Response, net.Conn) {
	t.Helper()
	r := newTestRecorder(t, mode, false)
	r.cfg.MaxQueued = maxQueued
	s, err := r.Start(t.Context(), testMeta)
	require.NoError(t, err)
	writeTo(t, s, f)
	resp, member := upgraded(t, "v5.channel.k8s.io")
	require.NoError(t, s.Tap(resp))
	return r, s, resp, member
}

func TestWritingFailsDuringTheSession(t *testing.T) {
	for _, mode := range []Mode{Required, BestEffort} {
		t.Run(string(mode), func(t *testing.T) {
			full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
			require.NoError(t, err)
			r, s, resp, member := tappedSession(t, mode, full, DefaultMaxQueued)

			buf := make([]byte, 1024)
			sent := send(member, stdoutMessage("one"))
			_, err = resp.Body.Read(buf)
			require.NoError(t, err)
			require.NoError(t, <-sent)
			assert.ErrorContains(t, waitFailed(s), "no space left on device")
			if mode == Required {
				// The recording failed, so the session is over: the
				// member's side was closed under it.
				_, err = resp.Body.Read(buf)
				assert.Error(t, err)
				s.Close()
				assert.Equal(t, 1.0, r.result(t, ResultEnded))
				return
			}
			sent = send(member, stdoutMessage("two"))
			n, err := resp.Body.Read(buf)
			require.NoError(t, err, "the session goes on")
			assert.Equal(t, stdoutMessage("two"), buf[:n])
			require.NoError(t, <-sent)
			s.Close()
			assert.Equal(t, 1.0, r.result(t, ResultFailed))
		})
	}
}

func TestBestEffortAbandonsARecordingThatFallsBehind(t *testing.T) {
	disk, stuck, err := os.Pipe() // a disk that takes nothing until read
	require.NoError(t, err)
	defer disk.Close()
	r, s, _, _ := tappedSession(t, BestEffort, stuck, 4<<10)

	// Far more than the pipe, the writer's buffer and the queue hold:
	// emit must never wait, and gives up on the recording instead.
	chunk := []byte(strings.Repeat("x", 1000))
	for range 1000 {
		require.NoError(t, s.output(srcStdout, chunk))
	}
	assert.ErrorIs(t, waitFailed(s), errBehind)
	done := make(chan string)
	go func() {
		b, _ := io.ReadAll(disk)
		done <- string(b)
	}()
	s.Close()
	rec := <-done
	assert.Equal(t, 1.0, r.result(t, ResultFailed))
	lines := strings.Split(strings.TrimSpace(rec), "\n")
	assert.Contains(t, lines[len(lines)-1], `"m", "recording stopped: the recording fell behind`)
	assert.Less(t, len(rec), 1000*1000, "what was dropped is not there")
}

func TestRequiredHoldsTheSessionBackRatherThanLoseOutput(t *testing.T) {
	disk, slow, err := os.Pipe()
	require.NoError(t, err)
	defer disk.Close()
	r, s, _, _ := tappedSession(t, Required, slow, 4<<10)

	read := make(chan string)
	go func() {
		b, _ := io.ReadAll(disk)
		read <- string(b)
	}()
	chunk := strings.Repeat("y", 1000)
	for range 1000 { // a thousand times the queue: each waits for room
		require.NoError(t, s.output(srcStdout, []byte(chunk)))
	}
	s.Close()
	rec := <-read
	assert.Equal(t, 1.0, r.result(t, ResultComplete))
	sc := bufio.NewScanner(strings.NewReader(rec))
	sc.Buffer(nil, 1<<20)
	total := 0
	for sc.Scan() {
		if strings.Contains(sc.Text(), `"o"`) {
			total += strings.Count(sc.Text(), "y")
		}
	}
	assert.Equal(t, 1000*1000, total, "nothing was dropped")
}

func TestTap(t *testing.T) {
	t.Run("an answer that is not an upgrade leaves no recording", func(t *testing.T) {
		r := newTestRecorder(t, Required, false)
		s, err := r.Start(t.Context(), testMeta)
		require.NoError(t, err)
		resp := &http.Response{StatusCode: http.StatusForbidden, Body: io.NopCloser(strings.NewReader("no"))}
		require.NoError(t, s.Tap(resp))
		s.Close()
		entries, err := os.ReadDir(r.dir)
		require.NoError(t, err)
		assert.Empty(t, entries)
		for _, result := range []string{ResultComplete, ResultFailed, ResultRefused, ResultEnded} {
			assert.Equal(t, 0.0, r.result(t, result), result)
		}
	})
	for _, mode := range []Mode{Required, BestEffort} {
		t.Run("a protocol it cannot read, "+string(mode), func(t *testing.T) {
			r := newTestRecorder(t, mode, false)
			s, err := r.Start(t.Context(), testMeta)
			require.NoError(t, err)
			resp, _ := upgraded(t, "v4.channel.k8s.io")
			resp.Header.Set("Sec-WebSocket-Extensions", "permessage-deflate")
			body := resp.Body
			err = s.Tap(resp)
			if mode == Required {
				assert.ErrorIs(t, err, ErrCannotRecord)
				assert.Equal(t, 1.0, r.result(t, ResultRefused))
			} else {
				assert.NoError(t, err)
				assert.Equal(t, 1.0, r.result(t, ResultFailed))
			}
			assert.Equal(t, body, resp.Body, "not tapped")
			s.Close()
			entries, err := os.ReadDir(r.dir)
			require.NoError(t, err)
			assert.Empty(t, entries)
		})
	}
	t.Run("required ends a session whose bytes it cannot read", func(t *testing.T) {
		r := newTestRecorder(t, Required, false)
		s, err := r.Start(t.Context(), testMeta)
		require.NoError(t, err)
		resp, member := upgraded(t, "v5.channel.k8s.io")
		require.NoError(t, s.Tap(resp))
		w := resp.Body.(io.Writer)
		_, err = w.Write([]byte{bitFin | 0x3, 0}) // no such opcode
		assert.ErrorIs(t, err, ErrCannotRecord)
		assert.ErrorIs(t, err, errWebsocketFrame)
		_, err = member.Read(make([]byte, 1))
		assert.ErrorIs(t, err, io.EOF, "closed, and nothing passed on")
		s.Close()
		assert.Equal(t, 1.0, r.result(t, ResultEnded))
	})
	t.Run("the request context ending stops the recording", func(t *testing.T) {
		r := newTestRecorder(t, BestEffort, false)
		ctx, cancel := context.WithCancel(t.Context())
		s, err := r.Start(ctx, testMeta)
		require.NoError(t, err)
		resp, _ := upgraded(t, "v5.channel.k8s.io")
		require.NoError(t, s.Tap(resp))
		require.NoError(t, s.output(srcStdout, []byte("before")))
		cancel()
		<-s.done
		require.NoError(t, s.output(srcStdout, []byte("after")))
		s.Close()
		_, events := readCast(t, filepath.Join(r.dir, testMeta.RequestID+".cast"))
		assert.Equal(t, "before", replay(events, "o"))
		assert.Equal(t, 1.0, r.result(t, ResultComplete))
	})
}
