package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/creack/pty"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"
)

// runtime is the test kubelet's stand-in for a container runtime: the host.
type runtime struct {
	ctx    context.Context
	logDir string

	mu       sync.Mutex
	attached map[string]*attachable
}

func newRuntime(ctx context.Context, logDir string) *runtime {
	return &runtime{ctx: ctx, logDir: logDir, attached: map[string]*attachable{}}
}

func (r *runtime) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, a := range r.attached {
		_ = a.cmd.Process.Kill()
		_ = a.cmd.Wait()
	}
}

// ExecInContainer runs cmd on the host, in a pseudo-terminal when tty.
func (r *runtime) ExecInContainer(ctx context.Context, _, _, _ string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize, _ time.Duration) error {
	if len(cmd) == 0 {
		return errors.New("no command")
	}
	c := exec.CommandContext(ctx, cmd[0], cmd[1:]...)
	c.Env = append(os.Environ(), "TERM=xterm")
	if tty {
		f, err := pty.Start(c)
		if err != nil {
			return err
		}
		defer f.Close()
		go func() {
			for s := range resize {
				_ = pty.Setsize(f, &pty.Winsize{Rows: s.Height, Cols: s.Width})
			}
		}()
		if in != nil {
			go func() { _, _ = io.Copy(f, in) }()
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			if out != nil {
				_, _ = io.Copy(out, f) // ends with EIO once the process exits
			}
		}()
		err = c.Wait()
		select {
		case <-done:
		case <-time.After(time.Second):
		}
		return exitErr(err)
	}
	if in != nil {
		c.Stdin = in
	}
	if out != nil {
		c.Stdout = out
	}
	if errw != nil {
		c.Stderr = errw
	}
	return exitErr(c.Run())
}

func exitErr(err error) error {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return utilexec.ExitErrorWrapper{ExitError: ee}
	}
	return err
}

// attachable is a container's main process: it echoes each stdin line as
// "attached: LINE" and appends its output to the container's log.
type attachable struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	mu    sync.Mutex
	outs  map[io.Writer]struct{}
}

func (r *runtime) attachTo(key, logPath string) (*attachable, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if a := r.attached[key]; a != nil {
		return a, nil
	}
	c := exec.Command("sh", "-c", `while IFS= read -r l; do echo "attached: $l"; done`)
	stdin, err := c.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := c.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := c.Start(); err != nil {
		return nil, err
	}
	a := &attachable{cmd: c, stdin: stdin, outs: map[io.Writer]struct{}{}}
	go a.fanOut(stdout, logPath)
	r.attached[key] = a
	return a, nil
}

func (a *attachable) fanOut(stdout io.Reader, logPath string) {
	logf, _ := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	buf := make([]byte, 32<<10)
	for {
		n, err := stdout.Read(buf)
		if n > 0 {
			if logf != nil {
				_, _ = logf.Write(buf[:n])
			}
			a.mu.Lock()
			for w := range a.outs {
				_, _ = w.Write(buf[:n])
			}
			a.mu.Unlock()
		}
		if err != nil {
			if logf != nil {
				_ = logf.Close()
			}
			return
		}
	}
}

// AttachContainer joins the container's process: its output goes to out,
// in goes to its stdin. It returns when in ends (after a moment for the
// answer) or the caller goes away.
func (r *runtime) AttachContainer(ctx context.Context, name, _, container string, in io.Reader, out, _ io.WriteCloser, _ bool, _ <-chan remotecommand.TerminalSize) error {
	a, err := r.attachTo(name+"/"+container, r.logPath(name, container))
	if err != nil {
		return err
	}
	if out != nil {
		a.mu.Lock()
		a.outs[out] = struct{}{}
		a.mu.Unlock()
		defer func() {
			a.mu.Lock()
			delete(a.outs, out)
			a.mu.Unlock()
		}()
	}
	if in == nil {
		<-ctx.Done()
		return nil
	}
	_, _ = io.Copy(a.stdin, in)
	select {
	case <-ctx.Done():
	case <-time.After(500 * time.Millisecond):
	}
	return nil
}

// logPath names a container's log; nsPod is "namespace/pod".
func (r *runtime) logPath(nsPod, container string) string {
	ns, pod, _ := strings.Cut(nsPod, "/")
	return filepath.Join(r.logDir, fmt.Sprintf("%s_%s_%s.log", ns, pod, container))
}

// serveLogs serves a container's log file; with follow=true it keeps
// sending what is appended until the caller goes away.
func (r *runtime) serveLogs(w http.ResponseWriter, req *http.Request) {
	if req.PathValue("container") == firehose {
		r.serveFirehose(w, req)
		return
	}
	path := filepath.Join(r.logDir, fmt.Sprintf("%s_%s_%s.log", req.PathValue("ns"), req.PathValue("pod"), req.PathValue("container")))
	f, err := os.Open(path)
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	defer f.Close()
	follow, _ := strconv.ParseBool(req.URL.Query().Get("follow"))
	w.Header().Set("Content-Type", "text/plain")
	rc := http.NewResponseController(w)
	buf := make([]byte, 64<<10)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return
		}
		if !follow {
			return
		}
		_ = rc.Flush()
		select {
		case <-req.Context().Done():
			return
		case <-r.ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// PortForward joins stream to port on the node's loopback.
func (r *runtime) PortForward(ctx context.Context, _, _ string, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
	if err != nil {
		return err
	}
	defer c.Close()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(c, stream); _ = c.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	go func() { _, _ = io.Copy(stream, c); done <- struct{}{} }()
	select {
	case <-done:
		<-done
	case <-ctx.Done():
	}
	return nil
}

// firehose is a container whose log is endless, as fast as the reader
// takes it: the load for fairness tests and benchmarks.
const firehose = "firehose"

func (r *runtime) serveFirehose(w http.ResponseWriter, req *http.Request) {
	line := []byte(strings.Repeat("firehose log line ", 5) + "\n")
	chunk := bytes.Repeat(line, (32<<10)/len(line))
	w.Header().Set("Content-Type", "text/plain")
	rc := http.NewResponseController(w)
	for req.Context().Err() == nil && r.ctx.Err() == nil {
		if _, err := w.Write(chunk); err != nil {
			return
		}
		_ = rc.Flush()
	}
}
