package tunnel

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Supervisor keeps tunnels to the hub up: dial, serve until the session
// ends, back off, dial again. It is the agent's outer loop.
//
// A hub may run as several replicas behind one address. The supervisor then
// keeps up to Connections sessions, each on a distinct replica (as named by
// Session.Replica), so that losing or rolling one replica costs no request:
// the hub sends new streams over the sessions that remain. It keeps
// min(Connections, replicas) of them, replicas being what the latest upgrade
// answer said (Session.Replicas); a hub that names no replica is one.
type Supervisor struct {
	Dialer  *Dialer
	Backoff *Backoff
	// Connections is how many sessions to keep, each on its own hub
	// replica; zero means 1.
	Connections int
	// PermanentFloor is the least wait after a refusal that will not fix
	// itself (401, 403, 426).
	PermanentFloor time.Duration
	// DuplicateWait bounds the short random wait, in [DuplicateWait/4,
	// DuplicateWait], after a new session landed on a replica already held
	// (the load balancer picked it again); zero: 2 s. After maxDuplicates
	// of those in a row the normal backoff applies, so agents do not hammer
	// a hub that has fewer replicas than they would like.
	DuplicateWait time.Duration
	// DrainPoll is how often a draining session is checked for streams;
	// zero: 1 s.
	DrainPoll time.Duration
	// RefreshReplicas is how often a supervisor that keeps fewer sessions
	// than Connections, because the hub said fewer replicas serve, dials
	// once more to learn whether more serve now (after a scale-up, or when
	// it first connected while the hub was still starting); zero: 5 min.
	RefreshReplicas time.Duration
	Handler         Handler
	Log             hclog.Logger
	// OnConnect and OnDisconnect, when set, observe each session's life
	// (the agent's metrics). OnDisconnect sees every failed dial and every
	// session lost, not sessions the supervisor closed itself (a duplicate,
	// a drained one).
	OnConnect    func(*Session)
	OnDisconnect func(err error)
	// OnSessions, when set, is told how many sessions are open, draining
	// ones included, whenever that changes (the agent's /readyz).
	OnSessions func(n int)
	// OnDrain, when set, observes each drain the hub asks for.
	OnDrain func(s *Session, grace time.Duration)
}

// maxDuplicates is how many sessions in a row may land on replicas already
// held before the supervisor falls back to its normal backoff.
const maxDuplicates = 3

// Run returns only when ctx ends, after every session it opened is closed.
func (s *Supervisor) Run(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r := s.newRun()
	// wg.Wait is deferred first so it runs last, after cancel, which is
	// what ends the sessions and the dial it waits for.
	defer r.wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for {
		r.schedule(ctx)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case res := <-r.dialed:
			r.dialDone(ctx, res)
		case e := <-r.ended:
			r.sessionEnded(e.s, e.err)
		case d := <-r.drains:
			r.drain(d.s, d.grace)
		case <-r.wait:
			r.wait = nil
		case <-r.refresh:
			r.refresh = nil
			r.probe = true
		case <-r.poll:
			r.poll = nil
			r.checkDrains()
		}
	}
}

// session is one session the supervisor holds.
type session struct {
	*Session
	since    time.Time
	draining bool
	deadline time.Time // draining: closed by then whatever it carries
	closing  bool      // Close called; its end is on the way
}

type dialResult struct {
	sess *Session
	err  error
}

type sessionEnd struct {
	s   *session
	err error
}

type drainRequest struct {
	s     *session
	grace time.Duration
}

// run is the state of one Run. Only Run's goroutine touches it; dials and
// sessions report to it over the channels.
type run struct {
	*Supervisor
	b     *Backoff
	clock Clock
	log   hclog.Logger
	floor time.Duration
	wg    sync.WaitGroup

	dialed chan dialResult
	ended  chan sessionEnd
	drains chan drainRequest

	sessions []*session
	// replicas is how many replicas the latest upgrade answer announced
	// (1 when it named none); named is whether it named one.
	replicas   int
	named      bool
	duplicates int

	dialing bool
	probe   bool             // dial once although the target is met
	wait    <-chan time.Time // no dial before it fires
	refresh <-chan time.Time // sets probe
	poll    <-chan time.Time // checkDrains
}

func (s *Supervisor) newRun() *run {
	r := &run{
		Supervisor: s,
		b:          s.Backoff,
		log:        s.Log,
		floor:      s.PermanentFloor,
		dialed:     make(chan dialResult),
		ended:      make(chan sessionEnd),
		drains:     make(chan drainRequest),
		replicas:   1,
	}
	if r.b == nil {
		r.b = DefaultBackoff()
	}
	r.clock = r.b.clock()
	if r.log == nil {
		r.log = hclog.NewNullLogger()
	}
	if r.floor <= 0 {
		r.floor = 30 * time.Second
	}
	return r
}

func (r *run) connections() int { return max(1, r.Connections) }

// target is how many sessions to keep: one per replica, up to Connections.
func (r *run) target() int { return min(r.connections(), r.replicas) }

// active is the number of sessions that count towards the target.
func (r *run) active() int {
	n := 0
	for _, s := range r.sessions {
		if !s.draining {
			n++
		}
	}
	return n
}

// schedule starts a dial when one is due and arms the timers the state
// needs. Run calls it after every event.
func (r *run) schedule(ctx context.Context) {
	if !r.dialing && r.wait == nil && (r.active() < r.target() || r.probe) {
		r.probe = false
		r.refresh = nil
		r.dial(ctx)
	}
	// Learn about replicas added since: only a hub that names its replicas
	// can tell a new one from a known one.
	limited := r.named && r.active() >= r.target() && r.target() < r.connections()
	switch {
	case !limited:
		r.refresh = nil
	case r.refresh == nil && !r.dialing && r.wait == nil:
		every := orDefault(r.RefreshReplicas, 5*time.Minute)
		r.refresh = r.clock.After(every/2 + r.b.jitter(every/2))
	}
	if r.poll == nil && slices.ContainsFunc(r.sessions, func(s *session) bool { return s.draining && !s.closing }) {
		r.poll = r.clock.After(orDefault(r.DrainPoll, time.Second))
	}
}

func (r *run) dial(ctx context.Context) {
	r.dialing = true
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		sess, err := r.Dialer.Dial(ctx)
		select {
		case r.dialed <- dialResult{sess: sess, err: err}:
		case <-ctx.Done():
			if sess != nil {
				_ = sess.Close()
			}
		}
	}()
}

func (r *run) dialDone(ctx context.Context, res dialResult) {
	r.dialing = false
	if ctx.Err() != nil {
		if res.sess != nil {
			_ = res.sess.Close()
		}
		return
	}
	if res.err != nil {
		r.dialFailed(res.err)
		return
	}
	sess := res.sess
	r.named = sess.Replica() != ""
	r.replicas = 1
	if r.named {
		r.replicas = max(1, sess.Replicas())
	}
	// A draining session does not count: the hub that ends a session at
	// its certificate's expiry drains it without draining itself, so the
	// replacement may land on the same replica, and must be kept.
	if r.named && slices.ContainsFunc(r.sessions, func(s *session) bool { return !s.draining && s.Replica() == sess.Replica() }) {
		_ = sess.Close()
		if r.active() >= r.target() {
			// A probe (or a dial the hub's new count made moot): done.
			r.log.Debug("new session landed on a hub replica already held; closed it", "replica", sess.Replica(), "replicas", sess.Replicas())
			return
		}
		r.duplicates++
		wait := r.duplicateWait()
		r.log.Debug("new session landed on a hub replica already held; closed it", "replica", sess.Replica(),
			"replicas", sess.Replicas(), "in_a_row", r.duplicates, "retry_in", wait.Round(time.Millisecond))
		r.wait = r.clock.After(wait)
		return
	}
	r.duplicates = 0
	s := &session{Session: sess, since: r.clock.Now()}
	r.sessions = append(r.sessions, s)
	r.log.Info("tunnel connected", "hub", r.Dialer.URL, "replica", sess.Replica(), "replicas", sess.Replicas(), "sessions", len(r.sessions))
	if r.OnConnect != nil {
		r.OnConnect(sess)
	}
	r.sessionsChanged()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		err := sess.Serve(ctx, r.handler(s))
		select {
		case r.ended <- sessionEnd{s: s, err: err}:
		case <-ctx.Done():
		}
	}()
	// A replacement is up: drained sessions that went idle need not wait
	// for the next poll.
	r.checkDrains()
}

// duplicateWait is the wait after r.duplicates sessions in a row landed on
// replicas already held: short and random at first, so that a fleet's
// agents do not retry together, then the normal backoff.
func (r *run) duplicateWait() time.Duration {
	if r.duplicates > maxDuplicates {
		return r.b.Next()
	}
	d := orDefault(r.DuplicateWait, 2*time.Second)
	return d/4 + r.b.jitter(d-d/4)
}

func (r *run) dialFailed(err error) {
	var (
		wait time.Duration
		he   *HandshakeError
	)
	switch {
	case IsPermanent(err):
		wait = r.b.Floor(r.floor)
		r.log.Error("hub refused the tunnel; check the agent's credentials and version", "error", err, "retry_in", wait.Round(time.Millisecond))
	case errors.As(err, &he) && he.RetryAfter > 0:
		wait = r.b.RetryAfter(he.RetryAfter)
		r.log.Warn("hub asked to come back later", "error", err, "retry_in", wait.Round(time.Millisecond))
	default:
		wait = r.b.Next()
		r.log.Warn("cannot reach hub", "error", err, "retry_in", wait.Round(time.Millisecond))
	}
	if r.OnDisconnect != nil {
		r.OnDisconnect(err)
	}
	r.wait = r.clock.After(wait)
}

// handler serves s's streams with the Supervisor's Handler, except drains,
// which are the supervisor's business.
func (r *run) handler(s *session) Handler {
	return func(ctx context.Context, in *Incoming) {
		if in.Request.Kind != KindDrain {
			r.Handler(ctx, in)
			return
		}
		// Acknowledge first: the hub waits for it, not for the replacement.
		if c, err := in.Accept(); err == nil {
			_ = c.Close()
		}
		select {
		case r.drains <- drainRequest{s: s, grace: in.Request.Timeout}:
		case <-ctx.Done():
		}
	}
}

func (r *run) sessionEnded(s *session, err error) {
	r.sessions = slices.DeleteFunc(r.sessions, func(x *session) bool { return x == s })
	r.sessionsChanged()
	if s.draining {
		r.log.Info("drained tunnel closed", "replica", s.Replica(), "sessions", len(r.sessions))
		return
	}
	r.b.Connected(s.since)
	if r.OnDisconnect != nil {
		r.OnDisconnect(err)
	}
	if errors.Is(err, ErrSessionClosed) {
		err = nil // the peer or the network ended it; nothing more to say
	}
	if r.dialing || r.wait != nil || r.active() >= r.target() {
		r.log.Warn("tunnel lost", "error", err, "replica", s.Replica(), "sessions", len(r.sessions))
		return
	}
	wait := r.b.Next()
	r.log.Warn("tunnel lost", "error", err, "replica", s.Replica(), "sessions", len(r.sessions), "retry_in", wait.Round(time.Millisecond))
	r.wait = r.clock.After(wait)
}

// drain takes s out of the target, so that schedule dials a replacement at
// once (unless a backoff is already running), and leaves closing it to
// checkDrains.
func (r *run) drain(s *session, grace time.Duration) {
	if s.draining || !slices.Contains(r.sessions, s) {
		return
	}
	s.draining = true
	s.deadline = r.clock.Now().Add(grace)
	r.log.Info("hub replica is draining; dialling a replacement", "replica", s.Replica(), "grace", grace, "streams", s.NumStreams())
	if r.OnDrain != nil {
		r.OnDrain(s.Session, grace)
	}
	r.checkDrains()
}

// checkDrains closes each draining session once it carries no streams and
// another session is up (make before break), or once its grace has passed.
func (r *run) checkDrains() {
	now := r.clock.Now()
	replaced := r.active() > 0
	for _, s := range r.sessions {
		if !s.draining || s.closing {
			continue
		}
		switch n := s.NumStreams(); {
		case !now.Before(s.deadline):
			r.log.Info("drain grace passed; closing the tunnel", "replica", s.Replica(), "streams", n)
		case n == 0 && replaced:
			r.log.Info("drained tunnel is idle; closing it", "replica", s.Replica())
		default:
			continue
		}
		s.closing = true
		_ = s.Close()
	}
}

func (r *run) sessionsChanged() {
	if r.OnSessions != nil {
		r.OnSessions(len(r.sessions))
	}
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
