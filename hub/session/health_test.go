package session

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"backhaul.io/backhaul/hub/internal/hubtest"
	"backhaul.io/backhaul/pkg/testutil"
	"backhaul.io/backhaul/tunnel"
)

// healthEnv is a registry and its tracker on a clock the test moves.
type healthEnv struct {
	reg     *Registry
	tracker *Tracker
	clock   *testutil.FakeClock
	prom    *prometheus.Registry
}

func newHealthEnv(t *testing.T, edit func(*TrackerConfig)) *healthEnv {
	r, m, prom := newTestRegistry(t)
	clock := testutil.NewFakeClock()
	r.now = clock.Now
	cfg := DefaultTrackerConfig()
	cfg.Now = clock.Now
	if edit != nil {
		edit(&cfg)
	}
	tr, err := NewTracker(r, m, cfg)
	require.NoError(t, err)
	return &healthEnv{reg: r, tracker: tr, clock: clock, prom: prom}
}

func (e *healthEnv) report(t *testing.T, cluster string) TunnelReport {
	t.Helper()
	for _, r := range e.tracker.Report() {
		if r.Cluster == cluster {
			return r
		}
	}
	t.Fatalf("no report of %s", cluster)
	return TunnelReport{}
}

func TestTrackerRoundTrips(t *testing.T) {
	e := newHealthEnv(t, func(c *TrackerConfig) { c.Weight = 0.5 })
	_, rm := add(t, e.reg, "edge", pipeSession(t), Agent{})
	defer rm()

	// The moving average starts at the first sample and halves the
	// distance to each next one.
	for _, ms := range []int{10, 20, 40} {
		e.tracker.observeRTT("edge", time.Duration(ms)*time.Millisecond)
		e.clock.Advance(time.Second)
	}
	r := e.report(t, "edge")
	assert.Equal(t, 27500*time.Microsecond, r.RTT, "10, then 15, then 27.5")
	assert.Equal(t, 40*time.Millisecond, r.RTTP99)

	// The p99 of 200 samples is the second largest; an outlier older
	// than the window no longer counts.
	e.tracker.observeRTT("edge", time.Second)
	e.clock.Advance(e.tracker.Window() + time.Second)
	for i := 1; i <= 200; i++ {
		e.tracker.observeRTT("edge", time.Duration(i)*time.Millisecond)
	}
	assert.Equal(t, 198*time.Millisecond, e.report(t, "edge").RTTP99)
	assert.EqualValues(t, 204, hubtest.Histogram(t, e.prom, "backhaul_hub_tunnel_rtt_seconds").GetSampleCount(),
		"every background measurement is in the fleet-wide histogram")
}

func TestTrackerBoundsSamples(t *testing.T) {
	e := newHealthEnv(t, func(c *TrackerConfig) { c.MaxSamples = 3 })
	for _, ms := range []int{500, 1, 2, 3} {
		e.tracker.observeRTT("edge", time.Duration(ms)*time.Millisecond)
	}
	_, rm := add(t, e.reg, "edge", pipeSession(t), Agent{})
	defer rm()
	assert.Equal(t, 3*time.Millisecond, e.report(t, "edge").RTTP99, "the oldest sample went to keep three")
}

func TestTrackerHistory(t *testing.T) {
	e := newHealthEnv(t, nil)
	start := e.clock.Now() // on a minute boundary
	assert.Nil(t, e.tracker.History("edge"))

	// Minute 0: 10 and 30 ms; minute 1: nothing; minute 2: 50 ms.
	e.tracker.observeRTT("edge", 10*time.Millisecond)
	e.clock.Advance(30 * time.Second)
	e.tracker.observeRTT("edge", 30*time.Millisecond)
	assert.Empty(t, e.tracker.History("edge"), "the minute is not over")
	e.clock.Advance(90 * time.Second)
	e.tracker.observeRTT("edge", 50*time.Millisecond)
	e.clock.Advance(time.Minute)
	assert.Equal(t, []RTTSample{
		{At: start.Add(time.Minute), RTT: 20 * time.Millisecond},
		{At: start.Add(3 * time.Minute), RTT: 50 * time.Millisecond},
	}, e.tracker.History("edge"), "one mean a minute, at its end, oldest first; a minute without probes is left out")

	// Two hours of probes every 15 s: the last hour's sixty minutes.
	for range 2 * 60 * 4 {
		e.clock.Advance(15 * time.Second)
		e.tracker.observeRTT("edge", 7*time.Millisecond)
	}
	e.clock.Advance(time.Minute)
	h := e.tracker.History("edge")
	require.Len(t, h, historyLen)
	assert.Equal(t, e.clock.Now().Truncate(time.Minute), h[len(h)-1].At)
	for i := 1; i < len(h); i++ {
		assert.Equal(t, time.Minute, h[i].At.Sub(h[i-1].At))
		assert.Equal(t, 7*time.Millisecond, h[i].RTT)
	}
}

func TestTrackerOpensAndLosses(t *testing.T) {
	e := newHealthEnv(t, nil)
	t0 := e.clock.Now()
	// Two sessions from the start (an agent's two replicas).
	s1, rm1 := add(t, e.reg, "edge", pipeSession(t), Agent{})
	_, rm2 := add(t, e.reg, "edge", pipeSession(t), Agent{})
	defer rm2()
	r := e.report(t, "edge")
	assert.Equal(t, []time.Time{t0, t0}, r.Opens)
	assert.Empty(t, r.Losses)

	// The first falls silent and is replaced.
	e.clock.Advance(time.Minute)
	s1.markEnd(DisconnectKeepalive)
	rm1()
	e.clock.Advance(time.Second)
	_, rm3 := add(t, e.reg, "edge", pipeSession(t), Agent{})
	defer rm3()
	r = e.report(t, "edge")
	assert.Equal(t, []time.Time{t0, t0, t0.Add(61 * time.Second)}, r.Opens)
	assert.Equal(t, []time.Time{t0.Add(time.Minute)}, r.Losses)
	assert.Equal(t, DisconnectKeepalive, r.DisconnectReason)
	assert.Equal(t, t0.Add(time.Minute), r.Disconnect)

	// The agent's refresh dial lands here again and is closed at once: a
	// duplicate is neither an open nor a loss, nor a disconnect.
	dup, rmDup := add(t, e.reg, "edge", pipeSession(t), Agent{})
	dup.markEnd(DisconnectAgentClosed)
	rmDup()
	r = e.report(t, "edge")
	assert.Len(t, r.Opens, 3)
	assert.Len(t, r.Losses, 1)
	assert.Equal(t, DisconnectKeepalive, r.DisconnectReason)
	assert.EqualValues(t, 1, hubtest.Counter(t, e.prom, "backhaul_hub_session_disconnects_total", map[string]string{"reason": DisconnectDuplicate}))

	// A planned replacement (the certificate's end) is a disconnect, not
	// a loss.
	e.clock.Advance(time.Hour)
	s4, rm4 := add(t, e.reg, "edge", pipeSession(t), Agent{})
	s4.markEnd(DisconnectExpired)
	rm4()
	r = e.report(t, "edge")
	assert.Len(t, r.Opens, 1, "the window's only")
	assert.Empty(t, r.Losses)
	assert.Equal(t, DisconnectExpired, r.DisconnectReason)
	assert.EqualValues(t, 1, hubtest.Counter(t, e.prom, "backhaul_hub_session_disconnects_total", map[string]string{"reason": DisconnectExpired}))

	// A flapping agent: only the latest maxEvents are reported.
	for range maxEvents + 5 {
		e.clock.Advance(time.Second)
		s, rm := add(t, e.reg, "edge", pipeSession(t), Agent{})
		e.clock.Advance(time.Second)
		s.markEnd(DisconnectLost)
		rm()
	}
	r = e.report(t, "edge")
	assert.Len(t, r.Opens, maxEvents)
	assert.Len(t, r.Losses, maxEvents)
	assert.Equal(t, e.clock.Now(), r.Losses[maxEvents-1])
}

func TestDisconnectReasons(t *testing.T) {
	e := newHealthEnv(t, nil)
	now := e.clock.Now()
	older := &Session{info: Info{ID: 1, Since: now.Add(-time.Hour)}}
	mk := func(id uint64, age time.Duration, marked string) *Session {
		s := &Session{info: Info{ID: id, Since: now.Add(-age)}}
		if marked != "" {
			s.markEnd(marked)
		}
		return s
	}
	tests := []struct {
		name      string
		s         *Session
		remaining []*Session
		want      string
	}{
		{"agent said goodbye", mk(2, time.Hour, DisconnectAgentClosed), nil, DisconnectAgentClosed},
		{"keepalive", mk(2, time.Hour, DisconnectKeepalive), []*Session{older}, DisconnectKeepalive},
		{"nothing marked", mk(2, time.Hour, ""), nil, DisconnectLost},
		{"the first reason stands", func() *Session { s := mk(2, time.Hour, DisconnectExpired); s.markEnd(DisconnectRevoked); return s }(), nil, DisconnectExpired},
		{"replaced by a newer session", mk(0, time.Hour, DisconnectAgentClosed), []*Session{older}, DisconnectReplaced},
		{"a duplicate closed at once", mk(2, time.Second, DisconnectAgentClosed), []*Session{older}, DisconnectDuplicate},
		{"an old second session is a loss", mk(2, time.Hour, DisconnectAgentClosed), []*Session{older}, DisconnectAgentClosed},
		{"revoked", mk(2, time.Second, DisconnectRevoked), []*Session{older}, DisconnectRevoked},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, disconnectReason(tc.s, tc.remaining, now))
		})
	}

	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	causes := []struct {
		name string
		ctx  context.Context
		err  error
		want string
	}{
		{"keepalive", context.Background(), fmt.Errorf("accept stream: %w", yamux.ErrKeepAliveTimeout), DisconnectKeepalive},
		{"close frame", context.Background(), tunnel.ErrSessionClosed, DisconnectAgentClosed},
		{"reset", context.Background(), errors.New("accept stream: connection reset by peer"), DisconnectLost},
		{"hub stops", canceled, context.Canceled, DisconnectShutdown},
	}
	for _, tc := range causes {
		t.Run(tc.name, func(t *testing.T) { assert.Equal(t, tc.want, endCause(tc.ctx, tc.err)) })
	}
}

func TestTrackerReportsSessions(t *testing.T) {
	e := newHealthEnv(t, nil)
	notAfter := e.clock.Now().Add(48 * time.Hour)
	s1, rm1 := add(t, e.reg, "edge", pipeSession(t), Agent{})
	defer rm1()
	e.clock.Advance(time.Minute)
	s2, rm2 := add(t, e.reg, "edge", pipeSession(t), Agent{CertNotAfter: notAfter, ClockOffset: -3 * time.Second, HasClock: true})
	defer rm2()
	s1.bytesTx.Add(100)
	s2.bytesTx.Add(20)
	s2.bytesRx.Add(7)
	s2.rtt.Store(int64(40 * time.Millisecond))

	r := e.report(t, "edge")
	assert.Equal(t, s1.info.Since, r.Since, "connected since the oldest session")
	assert.Equal(t, s2.info.Since, r.Newest)
	assert.Equal(t, notAfter, r.CertNotAfter, "the newest session's certificate")
	assert.True(t, r.HasClockSkew)
	assert.Equal(t, -3*time.Second+20*time.Millisecond, r.ClockSkew, "the header's offset, plus the half round trip it travelled")
	assert.EqualValues(t, 120, r.BytesTx)
	assert.EqualValues(t, 7, r.BytesRx)
	assert.Equal(t, 0, r.Streams)
}

func TestTrackerForgets(t *testing.T) {
	e := newHealthEnv(t, func(c *TrackerConfig) { c.MaxIdle = 2 })
	e.tracker.refused("a", RefusalCertExpired)
	e.clock.Advance(time.Second)
	e.tracker.refused("b", RefusalCertExpired)
	e.clock.Advance(time.Second)
	_, rm := add(t, e.reg, "held", pipeSession(t), Agent{})
	defer rm()
	e.tracker.refused("c", RefusalRevoked)
	names := func() []string {
		var out []string
		for _, r := range e.tracker.Report() {
			out = append(out, r.Cluster)
		}
		return out
	}
	assert.Equal(t, []string{"b", "c", "held"}, names(), "past MaxIdle clusters without a session, the least recent goes")

	// After the window only the held cluster is published; after the
	// hour, the others are forgotten.
	e.clock.Advance(e.tracker.Window() + time.Second)
	assert.Equal(t, []string{"held"}, names())
	e.clock.Advance(time.Hour)
	assert.Equal(t, []string{"held"}, names())
	e.tracker.mu.Lock()
	assert.Len(t, e.tracker.clusters, 1)
	e.tracker.mu.Unlock()
}

// refuser refuses every agent as cluster edge's with an expired
// certificate, or admits it as edge when admit is set.
type refuser struct{ admit bool }

func (f refuser) AuthenticateAgent(*http.Request) (string, error) {
	if f.admit {
		return "edge", nil
	}
	return "", &AgentRefusal{Cluster: "edge", Reason: RefusalCertExpired, Err: errors.New("x509: certificate has expired")}
}

func TestEndpointRecordsRefusals(t *testing.T) {
	e := newHealthEnv(t, nil)
	changed := make(chan string, 4)
	e.tracker.cfg.OnChange = func(c string) { changed <- c }
	for _, tc := range []struct {
		name   string
		admit  bool
		header func(http.Header)
		want   string
	}{
		{name: "expired certificate", want: RefusalCertExpired},
		{name: "protocol version", admit: true, want: RefusalVersion,
			header: func(h http.Header) { h.Set("Sec-WebSocket-Protocol", "backhaul.io/v0") }},
		{name: "node addresses", admit: true, want: RefusalNodeAddresses,
			header: func(h http.Header) { h.Set(tunnel.HeaderNodeAddresses, "127.0.0.1") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ep, err := NewEndpoint(e.reg, NewMetrics(prometheus.NewRegistry()), EndpointConfig{
				Auth: refuser{admit: tc.admit}, Tunnel: tunnel.DefaultConfig(), Log: testutil.Logger(t), MaxHandshakes: 1, Health: e.tracker,
			})
			require.NoError(t, err)
			req, _ := http.NewRequest(http.MethodGet, "/v1/tunnel", nil)
			req.Header.Set("Connection", "Upgrade")
			req.Header.Set("Upgrade", "websocket")
			req.Header.Set("Sec-WebSocket-Version", "13")
			req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
			req.Header.Set("Sec-WebSocket-Protocol", tunnel.Subprotocol)
			if tc.header != nil {
				tc.header(req.Header)
			}
			ep.ServeHTTP(httptest.NewRecorder(), req)
			r := e.report(t, "edge")
			assert.Equal(t, tc.want, r.RefusalReason)
			assert.Equal(t, e.clock.Now(), r.Refusal)
			assert.Equal(t, "edge", <-changed, "a refusal is published at once")
		})
	}
}

func TestEndpointRecordsBusyRefusals(t *testing.T) {
	e := newHealthEnv(t, nil)
	ep, err := NewEndpoint(e.reg, NewMetrics(prometheus.NewRegistry()), EndpointConfig{
		Auth: refuser{admit: true}, Tunnel: tunnel.DefaultConfig(), Log: testutil.Logger(t), MaxHandshakes: 1, Health: e.tracker,
	})
	require.NoError(t, err)
	ep.handshakes <- struct{}{} // the one slot is taken
	req, _ := http.NewRequest(http.MethodGet, "/v1/tunnel", nil)
	rec := httptest.NewRecorder()
	ep.ServeHTTP(rec, req)
	assert.Equal(t, http.StatusServiceUnavailable, rec.Code)
	assert.Equal(t, RefusalBusy, e.report(t, "edge").RefusalReason)
}

func TestParseAgentTime(t *testing.T) {
	recv := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		header string
		want   time.Duration
		ok     bool
	}{
		{"ahead", "2030-01-01T12:00:02.5Z", 2500 * time.Millisecond, true},
		{"behind, with a zone", "2030-01-01T12:59:00+01:00", -time.Minute, true},
		{"absent", "", 0, false},
		{"not a time", "yesterday", 0, false},
		{"too long", "2030-01-01T12:00:00.000000000000000000000000000000Z", 0, false},
		{"beyond belief", "2040-01-01T12:00:00Z", 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			if tc.header != "" {
				h.Set(tunnel.HeaderAgentTime, tc.header)
			}
			got, ok := parseAgentTime(h, recv)
			assert.Equal(t, tc.ok, ok)
			assert.Equal(t, tc.want, got)
		})
	}
}

// TestEndpointSessionHealth: a real upgrade carries the agent's clock,
// and each way a session ends is told apart.
func TestEndpointSessionHealth(t *testing.T) {
	r, m, _ := newTestRegistry(t)
	tr, err := NewTracker(r, m, DefaultTrackerConfig())
	require.NoError(t, err)
	g := gate{open: make(chan struct{})}
	close(g.open)
	ep, err := NewEndpoint(r, m, EndpointConfig{
		Auth: g, Tunnel: tunnel.DefaultConfig(), Log: testutil.Logger(t), MaxHandshakes: 4, Health: tr,
	})
	require.NoError(t, err)
	srv := httptest.NewTLSServer(ep)
	t.Cleanup(func() { r.CloseAll(); srv.Close() })
	url := "wss://" + srv.Listener.Addr().String()
	report := func() TunnelReport {
		for _, rep := range tr.Report() {
			if rep.Cluster == "edge" {
				return rep
			}
		}
		return TunnelReport{}
	}

	// The tracker hears of sessions after the registry does: wait for it.
	reported := func(cond func(TunnelReport) bool) {
		t.Helper()
		require.Eventually(t, func() bool { return cond(report()) }, hubtest.WaitBound, time.Millisecond)
	}
	agent, err := dialAgent(url)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return r.Connected("edge") }, hubtest.WaitBound, time.Millisecond)
	reported(func(rep TunnelReport) bool { return len(rep.Opens) == 1 })
	rep := report()
	require.True(t, rep.HasClockSkew, "the agent sent its clock")
	assert.Less(t, rep.ClockSkew.Abs(), time.Minute, "one machine, one clock")
	assert.False(t, rep.Since.IsZero())

	require.NoError(t, agent.Close())
	require.Eventually(t, func() bool { return !r.Connected("edge") }, hubtest.WaitBound, time.Millisecond)
	reported(func(rep TunnelReport) bool { return len(rep.Losses) == 1 })
	assert.Equal(t, DisconnectAgentClosed, report().DisconnectReason)

	agent, err = dialAgent(url)
	require.NoError(t, err)
	defer agent.Close()
	require.Eventually(t, func() bool { return r.Connected("edge") }, hubtest.WaitBound, time.Millisecond)
	reported(func(rep TunnelReport) bool { return len(rep.Opens) == 2 })
	assert.Equal(t, 1, r.Close("edge"))
	require.Eventually(t, func() bool { return !r.Connected("edge") }, hubtest.WaitBound, time.Millisecond)
	reported(func(rep TunnelReport) bool { return len(rep.Losses) == 2 })
	assert.Equal(t, DisconnectRevoked, report().DisconnectReason)
	assert.Len(t, report().Losses, 2)
	assert.Len(t, report().Opens, 2)
}
