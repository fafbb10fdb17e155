package session

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// TrackerConfig is what the tunnel health tracker needs.
type TrackerConfig struct {
	// Window is what the round trip's 99th percentile and the
	// reconnects are counted over.
	Window time.Duration
	// Weight is a new round trip's weight in the moving average, in
	// (0, 1]: 0.2 follows a change within about ten probes.
	Weight float64
	// MaxSamples bounds the round trips kept per cluster for the
	// percentile (the oldest go first).
	MaxSamples int
	// MaxIdle bounds the clusters tracked that hold no session here
	// (their last one was lost, or their agent refused); past it the one
	// heard of least recently is forgotten.
	MaxIdle int
	// OnChange, when set, is called outside any lock when the tracker
	// recorded a refusal (connects and disconnects reach the registry's
	// watchers already). It must not block.
	OnChange func(cluster string)
	// Now is the clock; tests inject one.
	Now func() time.Time
}

// DefaultTrackerConfig is a 10-minute window.
func DefaultTrackerConfig() TrackerConfig {
	return TrackerConfig{Window: 10 * time.Minute, Weight: 0.2, MaxSamples: 1024, MaxIdle: 10_000, Now: time.Now}
}

// Validate checks the settings.
func (c TrackerConfig) Validate() error {
	var errs []error
	if c.Window < time.Minute {
		errs = append(errs, fmt.Errorf("tunnel health window %v: at least 1m", c.Window))
	}
	if c.Weight <= 0 || c.Weight > 1 {
		errs = append(errs, fmt.Errorf("tunnel health: moving average weight %v not in (0, 1]", c.Weight))
	}
	if c.MaxSamples < 1 || c.MaxIdle < 1 || c.Now == nil {
		errs = append(errs, errors.New("tunnel health: MaxSamples, MaxIdle and Now are required"))
	}
	return errors.Join(errs...)
}

// historyLen is how many one-minute samples History keeps: an hour.
const historyLen = 60

// maxEvents bounds the opens and losses of one cluster a report carries
// (the latest): a cluster past it is flapping whatever the exact count.
const maxEvents = 32

// Tracker keeps, for each cluster, the health of its tunnels to this
// replica, all measured in the background: the round trips the prober
// measured (a moving average, the 99th percentile over the window, an
// hour of one-minute means), the sessions opened and lost within the
// window, when and why the last one ended, and when and why the hub last
// refused one of its agents. What the sessions carry (streams, bytes,
// certificate, clock) is read off the live sessions when asked.
type Tracker struct {
	cfg      TrackerConfig
	registry *Registry
	metrics  *Metrics

	mu       sync.Mutex
	clusters map[string]*track
}

// track is one cluster's health on this replica.
type track struct {
	ewma    time.Duration // 0 before the first round trip
	samples []rttAt       // within the window, oldest first

	// The minute being gathered, and the hour before it.
	minute    time.Time
	minuteSum time.Duration
	minuteN   int
	history   []RTTSample

	opened []openAt    // sessions opened within the window
	losses []time.Time // sessions lost within the window (isLoss)

	disconnectAt     time.Time
	disconnectReason string
	refusalAt        time.Time
	refusalReason    string

	held int       // sessions registered here now
	seen time.Time // the last thing heard of it
}

type rttAt struct {
	at  time.Time
	rtt time.Duration
}

type openAt struct {
	id uint64
	at time.Time
}

// NewTracker tracks the sessions reg registers and counts round trips on
// m.
func NewTracker(reg *Registry, m *Metrics, cfg TrackerConfig) (*Tracker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if reg == nil || m == nil {
		return nil, errors.New("tunnel health: Registry and Metrics are required")
	}
	t := &Tracker{cfg: cfg, registry: reg, metrics: m, clusters: map[string]*track{}}
	reg.observe(t)
	return t, nil
}

// Window is what the percentile and reconnects are counted over.
func (t *Tracker) Window() time.Duration { return t.cfg.Window }

// get returns cluster's track, making one. Callers hold t.mu.
func (t *Tracker) get(cluster string, now time.Time) *track {
	tr := t.clusters[cluster]
	if tr == nil {
		t.forgetIdle()
		tr = &track{}
		t.clusters[cluster] = tr
	}
	tr.seen = now
	return tr
}

// forgetIdle makes room for one more cluster within MaxIdle by
// forgetting the idle one heard of least recently.
func (t *Tracker) forgetIdle() {
	idle, oldest := 0, ""
	var oldestSeen time.Time
	for name, tr := range t.clusters {
		if tr.held > 0 {
			continue
		}
		idle++
		if oldest == "" || tr.seen.Before(oldestSeen) {
			oldest, oldestSeen = name, tr.seen
		}
	}
	if idle >= t.cfg.MaxIdle {
		delete(t.clusters, oldest)
	}
}

func (t *Tracker) sessionOpened(s *Session) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.cfg.Now()
	tr := t.get(s.Cluster(), now)
	tr.held++
	tr.opened = append(tr.opened, openAt{id: s.info.ID, at: now})
}

func (t *Tracker) sessionClosed(s *Session, reason string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.cfg.Now()
	tr := t.get(s.Cluster(), now)
	tr.held = max(0, tr.held-1)
	if reason == DisconnectDuplicate {
		// No loss: the agent let go of a session it did not want. It
		// was not a reconnect either.
		tr.opened = slices.DeleteFunc(tr.opened, func(o openAt) bool { return o.id == s.info.ID })
		return
	}
	if isLoss(reason) {
		tr.losses = append(tr.losses, now)
	}
	tr.disconnectAt, tr.disconnectReason = now, reason
}

// isLoss says whether a session that ended for reason was lost, rather
// than replaced as planned (its certificate's or its maximum age's end, a
// replica's drain) or ended by this replica stopping: a loss followed by
// an open is a reconnect, the instability an operator looks for.
func isLoss(reason string) bool {
	switch reason {
	case DisconnectAgentClosed, DisconnectKeepalive, DisconnectLost, DisconnectRevoked:
		return true
	}
	return false
}

// refused records that this replica refused an agent whose credential
// names cluster, and why (a Refusal constant).
func (t *Tracker) refused(cluster, reason string) {
	t.mu.Lock()
	now := t.cfg.Now()
	tr := t.get(cluster, now)
	tr.refusalAt, tr.refusalReason = now, reason
	t.mu.Unlock()
	if t.cfg.OnChange != nil {
		t.cfg.OnChange(cluster)
	}
}

// observeRTT records a round trip the prober measured.
func (t *Tracker) observeRTT(cluster string, rtt time.Duration) {
	t.metrics.observeRTT(rtt)
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.cfg.Now()
	tr := t.get(cluster, now)
	if tr.ewma == 0 {
		tr.ewma = rtt
	} else {
		tr.ewma += time.Duration(t.cfg.Weight * float64(rtt-tr.ewma))
	}
	tr.samples = append(tr.samples, rttAt{at: now, rtt: rtt})
	if over := len(tr.samples) - t.cfg.MaxSamples; over > 0 {
		tr.samples = slices.Delete(tr.samples, 0, over)
	}
	tr.endMinute(now)
	if tr.minuteN == 0 {
		tr.minute = now.Truncate(time.Minute)
	}
	tr.minuteSum += rtt
	tr.minuteN++
}

// endMinute moves the minute being gathered into the history once now
// is past it.
func (tr *track) endMinute(now time.Time) {
	end := tr.minute.Add(time.Minute)
	if tr.minuteN == 0 || now.Before(end) {
		return
	}
	tr.history = append(tr.history, RTTSample{At: end, RTT: tr.minuteSum / time.Duration(tr.minuteN)})
	if over := len(tr.history) - historyLen; over > 0 {
		tr.history = slices.Delete(tr.history, 0, over)
	}
	tr.minuteSum, tr.minuteN = 0, 0
}

// prune drops what fell out of the window (and the hour of history).
func (tr *track) prune(now time.Time, window time.Duration) {
	from := now.Add(-window)
	tr.samples = slices.DeleteFunc(tr.samples, func(s rttAt) bool { return s.at.Before(from) })
	tr.opened = slices.DeleteFunc(tr.opened, func(o openAt) bool { return o.at.Before(from) })
	tr.losses = slices.DeleteFunc(tr.losses, func(at time.Time) bool { return at.Before(from) })
	tr.endMinute(now)
	hour := now.Add(-historyLen * time.Minute)
	tr.history = slices.DeleteFunc(tr.history, func(s RTTSample) bool { return !s.At.After(hour) })
}

// p99 is the nearest-rank 99th percentile of the window's round trips.
func (tr *track) p99() time.Duration {
	if len(tr.samples) == 0 {
		return 0
	}
	rtts := make([]time.Duration, len(tr.samples))
	for i, s := range tr.samples {
		rtts[i] = s.rtt
	}
	slices.Sort(rtts)
	rank := (99*len(rtts) + 99) / 100 // ceil(0.99 n)
	return rtts[rank-1]
}

// recent says whether anything of tr is worth publishing: a session
// here, or something that happened within the window.
func (tr *track) recent(from time.Time) bool {
	return tr.held > 0 || len(tr.opened) > 0 || len(tr.losses) > 0 || !tr.disconnectAt.Before(from) || !tr.refusalAt.Before(from)
}

// History is cluster's round trips through this replica over the last
// hour, one sample a minute (the minute's mean, at its end), oldest
// first; minutes without a measurement are left out.
func (t *Tracker) History(cluster string) []RTTSample {
	t.mu.Lock()
	defer t.mu.Unlock()
	tr := t.clusters[cluster]
	if tr == nil {
		return nil
	}
	tr.prune(t.cfg.Now(), t.cfg.Window)
	return slices.Clone(tr.history)
}

// TunnelReport is what this replica knows of one cluster's tunnels.
type TunnelReport struct {
	Cluster string
	// RTT is the moving average of the round trip, RTTP99 the 99th
	// percentile over the window (0: none measured).
	RTT, RTTP99 time.Duration
	// Opens and Losses are when sessions were opened and lost within the
	// window, oldest first, the latest maxEvents of each: the status
	// writer pairs them into reconnects, across replicas.
	Opens, Losses []time.Time
	// Streams open now, and the bytes the open sessions carried.
	Streams          int
	BytesTx, BytesRx int64
	// Since and Newest are when the oldest and the newest open session
	// started (zero without one).
	Since, Newest time.Time
	// CertNotAfter and ClockSkew are the newest session's.
	CertNotAfter time.Time
	ClockSkew    time.Duration
	HasClockSkew bool
	// The last disconnect and refusal here (zero: none known).
	Disconnect       time.Time
	DisconnectReason string
	Refusal          time.Time
	RefusalReason    string
}

// Report is what this replica knows of every cluster it holds a session
// of or heard of within the window, sorted by cluster. Clusters heard of
// neither within the window nor within the hour of history are
// forgotten.
func (t *Tracker) Report() []TunnelReport {
	live := map[string][]*Session{}
	// By cluster, then age: the newest comes last.
	for _, s := range t.registry.Sessions() {
		live[s.Cluster()] = append(live[s.Cluster()], s)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.cfg.Now()
	from := now.Add(-t.cfg.Window)
	out := make([]TunnelReport, 0, len(t.clusters))
	for name, tr := range t.clusters {
		tr.prune(now, t.cfg.Window)
		ss := live[name]
		if !tr.recent(from) && len(ss) == 0 {
			if len(tr.history) == 0 && tr.seen.Before(now.Add(-historyLen*time.Minute)) {
				delete(t.clusters, name)
			}
			continue
		}
		r := TunnelReport{
			Cluster: name, RTT: tr.ewma, RTTP99: tr.p99(), Opens: latest(tr.opened), Losses: lastN(tr.losses),
			Disconnect: tr.disconnectAt, DisconnectReason: tr.disconnectReason,
			Refusal: tr.refusalAt, RefusalReason: tr.refusalReason,
		}
		if len(ss) > 0 {
			fillSessions(&r, ss)
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b TunnelReport) int { return cmp.Compare(a.Cluster, b.Cluster) })
	return out
}

// latest is when the latest maxEvents of opened were.
func latest(opened []openAt) []time.Time {
	opened = opened[max(0, len(opened)-maxEvents):]
	out := make([]time.Time, len(opened))
	for i, o := range opened {
		out[i] = o.at
	}
	return out
}

// lastN is the latest maxEvents of ts, copied.
func lastN(ts []time.Time) []time.Time { return slices.Clone(ts[max(0, len(ts)-maxEvents):]) }

// fillSessions adds what the live sessions ss (oldest first) carry.
func fillSessions(r *TunnelReport, ss []*Session) {
	newest := ss[len(ss)-1]
	r.Since, r.Newest = ss[0].info.Since, newest.info.Since
	r.CertNotAfter = newest.CertNotAfter()
	r.ClockSkew, r.HasClockSkew = newest.ClockSkew()
	for _, s := range ss {
		r.Streams += s.tunnel.NumStreams()
		tx, rx := s.Bytes()
		r.BytesTx += tx
		r.BytesRx += rx
	}
}
