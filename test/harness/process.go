package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// StopGracePeriod is how long [Process.Stop] waits after SIGTERM before it
// escalates to SIGKILL.
const StopGracePeriod = 5 * time.Second

// tailReadLimit bounds how much of a log file [Process.Tail] reads.
const tailReadLimit = 256 << 10

// Process is a child process running in its own process group with its
// stdout and stderr appended to a log file. It is safe for concurrent use.
type Process struct {
	name    string
	cmd     *exec.Cmd
	logPath string

	done    chan struct{} // closed once the process has been reaped
	waitErr error         // written before done is closed

	stopOnce sync.Once
}

// Start starts cmd as a process named name (used for the log file name
// <logDir>/<name>.log and in messages). It puts the process in a new process
// group and asks the kernel to SIGKILL it if the test binary dies
// (Pdeathsig). cmd's Stdout and Stderr are replaced by the log file, which is
// appended to, so restarts of the same name share one log.
//
// ctx is only checked before starting: the process's lifetime is controlled by
// [Process.Stop] and [Process.Kill], not by ctx, so a start-up deadline does
// not kill a long-lived server.
func Start(ctx context.Context, name, logDir string, cmd *exec.Cmd) (*Process, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	logPath := filepath.Join(logDir, name+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: open log: %w", name, err)
	}
	// The child holds its own copy of the descriptor; ours is not needed
	// once Start has returned.
	defer logFile.Close()
	fmt.Fprintf(logFile, "=== %s: starting %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(cmd.Args, " "))

	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pgid = 0
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (%s): %w", name, cmd.Path, err)
	}

	p := &Process{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Name returns the name given to [Start].
func (p *Process) Name() string { return p.name }

// PID returns the process ID, which is also its process group ID.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// LogPath returns the path of the log file receiving stdout and stderr.
func (p *Process) LogPath() string { return p.logPath }

// Exited returns a channel that is closed once the process has exited and
// been reaped.
func (p *Process) Exited() <-chan struct{} { return p.done }

// Err returns the result of waiting for the process (nil for a clean exit
// with status 0), or nil if it is still running.
func (p *Process) Err() error {
	select {
	case <-p.done:
		return p.waitErr
	default:
		return nil
	}
}

// Stop sends SIGTERM to the process group, waits up to [StopGracePeriod],
// then SIGKILLs the group and waits for the process to be reaped. It is
// idempotent and safe to call concurrently.
func (p *Process) Stop() {
	p.terminate(syscall.SIGTERM, StopGracePeriod)
}

// Kill SIGKILLs the process group immediately (for simulating a crash) and
// waits for the process to be reaped. It is idempotent.
func (p *Process) Kill() {
	p.terminate(syscall.SIGKILL, 0)
}

func (p *Process) terminate(sig syscall.Signal, grace time.Duration) {
	p.stopOnce.Do(func() {
		pgid := p.PID()
		select {
		case <-p.done:
		default:
			_ = syscall.Kill(-pgid, sig)
			if grace > 0 {
				t := time.NewTimer(grace)
				select {
				case <-p.done:
				case <-t.C:
					_ = syscall.Kill(-pgid, syscall.SIGKILL)
				}
				t.Stop()
			}
			<-p.done
		}
		// Sweep up children left behind in the group. The kernel does not
		// hand out a PID that is still in use as a process group ID, so this
		// only reaches our own descendants (ESRCH if none remain).
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	})
	<-p.done
}

// Tail returns the last n lines of the process's log.
func (p *Process) Tail(n int) string {
	return tailFile(p.logPath, n)
}

// tailFile returns the last n lines of the file at path, or a note saying why
// it could not be read.
func tailFile(path string, n int) string {
	if n <= 0 {
		return ""
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(cannot stat %s: %v)", path, err)
	}
	off := max(st.Size()-tailReadLimit, 0)
	buf, err := io.ReadAll(io.NewSectionReader(f, off, st.Size()-off))
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	buf = bytes.TrimRight(buf, "\n")
	lines := bytes.Split(buf, []byte("\n"))
	if off > 0 && len(lines) > 1 {
		lines = lines[1:] // first line is probably partial
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
