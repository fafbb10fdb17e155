package recording

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Recorder starts the recordings of sessions. A nil Recorder records
// nothing.
type Recorder struct {
	cfg Config
}

// New checks cfg and makes the recording directory; with Mode Off it
// returns nil (recording nothing). A directory that cannot be made or
// written to is an error at start-up rather than at the first session.
func New(cfg Config) (*Recorder, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Mode == Off {
		return nil, nil
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("recording directory: %w", err)
	}
	probe, err := os.CreateTemp(cfg.Dir, ".probe-*")
	if err != nil {
		return nil, fmt.Errorf("recording directory: %w", err)
	}
	_ = probe.Close()
	_ = os.Remove(probe.Name())
	cfg.Log.Info("recording exec and attach sessions", "mode", cfg.Mode, "dir", cfg.Dir, "stdin", cfg.Stdin)
	return &Recorder{cfg: cfg}, nil
}

// ErrCannotRecord says that a session must be recorded and cannot be.
var ErrCannotRecord = errors.New("the session cannot be recorded")

// Start creates the recording of one session, DIR/REQUEST-ID.cast, for
// Tap to fill. It is nil (recording nothing) when r is nil, or when the
// file cannot be created in best-effort mode; in required mode that is
// an ErrCannotRecord, and the session must be refused. ctx ending stops
// the recording as Close does.
func (r *Recorder) Start(ctx context.Context, meta Meta) (*Session, error) {
	if r == nil {
		return nil, nil
	}
	log := r.cfg.Log.With("request_id", meta.RequestID, "cluster", meta.Cluster, "user", meta.User)
	f, err := r.create(meta.RequestID)
	if err != nil {
		if r.cfg.Mode == Required {
			r.cfg.Metrics.recorded(ResultRefused)
			log.Error("session refused: its recording cannot be created", "error", err)
			return nil, fmt.Errorf("%w: %w", ErrCannotRecord, err)
		}
		r.cfg.Metrics.recorded(ResultFailed)
		log.Warn("session not recorded: its recording cannot be created", "error", err)
		return nil, nil
	}
	s := &Session{cfg: &r.cfg, log: log, meta: meta, file: f, done: make(chan struct{})}
	s.cond.L = &s.mu
	s.stopOnCancel = context.AfterFunc(ctx, s.stop)
	return s, nil
}

// create opens a new recording file named by the request id.
func (r *Recorder) create(id string) (*os.File, error) {
	if id == "" || len(id) > 64 || filepath.Base(id) != id || id[0] == '.' {
		return nil, fmt.Errorf("request id %q cannot name a file", id)
	}
	return os.OpenFile(filepath.Join(r.cfg.Dir, id+".cast"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
}

// Session is the recording of one exec or attach session. A nil Session
// records nothing.
type Session struct {
	cfg          *Config
	log          hclog.Logger
	meta         Meta
	file         *os.File
	start        time.Time
	stopOnCancel func() bool
	once         sync.Once
	done         chan struct{} // closed when run has finished the file

	// stopped is set once the recording takes nothing more (failed or
	// closed), so the tap passes bytes without decoding them.
	stopped atomic.Bool

	mu     sync.Mutex
	cond   sync.Cond // queue gained an event or room, or the session ended
	queue  []event
	queued int // bytes of queue's events, against MaxQueued
	tapped bool
	closed bool
	err    error // why the recording stopped early
	// endedSession: err came while the session ran, in required mode,
	// and ended it.
	endedSession bool
	abort        func() // ends the session (required mode)
}

// Tap records resp's upgraded connection: resp.Body, the connection, is
// wrapped to read both directions on their way. A response that is not
// a switch of protocols recorded nothing (Close removes the empty file).
// In required mode, a protocol the recording cannot read is an
// ErrCannotRecord, and the session must be refused.
func (s *Session) Tap(resp *http.Response) error {
	if s == nil || resp.StatusCode != http.StatusSwitchingProtocols {
		return nil
	}
	conn, isConn := resp.Body.(io.ReadWriteCloser)
	fromMember, fromCaller, name, ok := protocol(resp, s)
	if !isConn || !ok {
		s.stopped.Store(true)
		if s.cfg.Mode == Required {
			s.cfg.Metrics.recorded(ResultRefused)
			s.log.Error("session refused: its protocol cannot be recorded", "protocol", name)
			return fmt.Errorf("%w: protocol %q is not one the recording reads", ErrCannotRecord, name)
		}
		s.cfg.Metrics.recorded(ResultFailed)
		s.log.Warn("session not recorded: its protocol cannot be recorded", "protocol", name)
		return nil
	}
	s.meta.Protocol = name
	s.mu.Lock()
	s.tapped, s.start = true, time.Now()
	s.abort = func() { _ = conn.Close() }
	s.mu.Unlock()
	go s.run()
	resp.Body = &tap{conn: conn, s: s, fromMember: fromMember, caller: fromCaller}
	return nil
}

// Close ends the recording: what is queued is written and the file
// closed (an untapped session's empty file is removed). It waits for the
// file to be finished.
func (s *Session) Close() {
	if s == nil {
		return
	}
	s.stop()
	s.stopOnCancel()
	s.once.Do(func() {
		s.mu.Lock()
		tapped := s.tapped
		s.mu.Unlock()
		if !tapped {
			_ = s.file.Close()
			_ = os.Remove(s.file.Name())
			close(s.done)
		}
	})
	<-s.done
}

// stop takes no more events; run writes the queue and finishes.
func (s *Session) stop() {
	s.mu.Lock()
	s.closed = true
	s.stopped.Store(true)
	s.cond.Broadcast()
	s.mu.Unlock()
}

// recording says whether the tap should still decode.
func (s *Session) recording() bool { return !s.stopped.Load() }

// check handles err from a decoder (a malformed stream, or its events'
// recording failed): the recording stops; in required mode so does the
// session, by the error the tap returns.
func (s *Session) check(err error) error {
	if err == nil {
		return nil
	}
	s.mu.Lock()
	abort := s.failLocked(err)
	s.mu.Unlock()
	if abort != nil {
		abort()
	}
	if s.cfg.Mode == Required {
		return fmt.Errorf("%w: %w", ErrCannotRecord, err)
	}
	return nil
}

// failLocked stops the recording for err, and returns what ends the
// session when that is what the mode asks.
func (s *Session) failLocked(err error) (abort func()) {
	if s.err != nil {
		return nil
	}
	s.err = err
	s.stopped.Store(true)
	s.cond.Broadcast()
	if s.cfg.Mode == Required && !s.closed {
		s.endedSession = true
		return s.abort
	}
	return nil
}

var errBehind = errors.New("the recording fell behind the session (the disk is slower than its output)")

// output queues a chunk of stdin, stdout or stderr.
func (s *Session) output(src source, b []byte) error {
	if src == srcStdin && !s.cfg.Stdin {
		return nil
	}
	return s.emit(event{src: src, data: b})
}

// resize queues a terminal size.
func (s *Session) resize(cols, rows uint16) error {
	return s.emit(event{src: srcResize, cols: cols, rows: rows})
}

// emit queues e. In best-effort mode it never waits: a full queue stops
// the recording. In required mode it waits for room (the session slows
// to the disk's pace) and returns the error that stopped the recording.
func (s *Session) emit(e event) error {
	at := time.Since(s.start)
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		switch {
		case s.err != nil:
			if s.cfg.Mode == Required {
				return s.err
			}
			return nil
		case s.closed:
			return nil
		case s.queued == 0 || s.queued+e.size() <= s.cfg.MaxQueued:
			e.at, e.data = at, bytes.Clone(e.data)
			s.queue = append(s.queue, e)
			s.queued += e.size()
			s.cond.Broadcast()
			return nil
		case s.cfg.Mode != Required:
			s.failLocked(errBehind)
			return nil
		}
		s.cond.Wait()
	}
}

// run writes queued events to the file until the session ends or the
// recording fails, then finishes the file and counts the result.
func (s *Session) run() {
	defer close(s.done)
	w := newCastWriter(s.file, header{
		Version: 2, Width: defaultCols, Height: defaultRows, Timestamp: s.start.Unix(),
		Command: s.meta.command(), Title: s.meta.title(), Backhaul: s.meta,
	})
	var batch []event
	var werr error
	for {
		s.mu.Lock()
		for len(s.queue) == 0 && !s.closed && s.err == nil {
			s.cond.Wait()
		}
		batch, s.queue = s.queue, batch[:0]
		over := s.closed || s.err != nil
		s.mu.Unlock()

		size := 0
		for i := range batch {
			size += batch[i].size()
			if werr == nil {
				werr = w.write(&batch[i])
			}
			batch[i].data = nil
		}
		if werr == nil {
			werr = w.flush()
		}
		s.mu.Lock()
		s.queued -= size
		s.cond.Broadcast()
		var abort func()
		if werr != nil {
			abort = s.failLocked(fmt.Errorf("writing %s: %w", s.file.Name(), werr))
		}
		s.mu.Unlock()
		if abort != nil {
			abort()
		}
		if over || werr != nil {
			break
		}
	}
	s.finish(w, werr)
}

// finish closes the file, with a marker saying why when the recording
// stopped early, and counts and logs the result.
func (s *Session) finish(w *castWriter, werr error) {
	s.mu.Lock()
	why, ended := s.err, s.endedSession
	s.mu.Unlock()
	at := time.Since(s.start)
	if werr == nil && why != nil {
		werr = w.write(&event{at: at, src: srcMarker, data: []byte("recording stopped: " + why.Error())})
	}
	if werr == nil {
		werr = w.finish(at)
	}
	if err := s.file.Close(); werr == nil {
		werr = err
	}
	if why == nil && werr != nil {
		why = werr
	}
	switch {
	case why == nil:
		s.cfg.Metrics.recorded(ResultComplete)
		s.log.Debug("session recorded", "file", s.file.Name(), "duration", at)
	case ended:
		s.cfg.Metrics.recorded(ResultEnded)
		s.log.Error("session ended: its recording failed", "file", s.file.Name(), "error", why)
	default:
		s.cfg.Metrics.recorded(ResultFailed)
		s.log.Warn("session recording incomplete", "file", s.file.Name(), "error", why)
	}
}
