package session

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/client-go/rest"

	"backhaul.io/backhaul/hub/internal/hubtest"
	"backhaul.io/backhaul/tunnel"
)

// connectAgent registers a session for cluster whose agent serves h.
func connectAgent(t *testing.T, r *Registry, cluster string, h tunnel.Handler) (*Session, func()) {
	hubSide, agentSide := hubtest.PipeSessions(t)
	hubtest.ServeAgent(t, agentSide, h)
	return add(t, r, cluster, hubSide, Agent{Version: "test"})
}

// echoHeaders answers with the identity and request id it was sent.
func echoHeaders(seen chan<- http.Header) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
		_, _ = io.WriteString(w, "ok")
	})
}

func TestDialerConfigFollowsSessions(t *testing.T) {
	r, m, reg := newTestRegistry(t)
	d := NewDialer(r, nil, m, time.Second)
	cfg := d.Config("edge", rest.ImpersonationConfig{UserName: "backhaul:hub", Groups: []string{"backhaul:propagators"}})
	hc, err := rest.HTTPClientFor(cfg)
	require.NoError(t, err)
	get := func() (string, error) {
		resp, err := hc.Get(cfg.Host + "/readyz")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}

	_, err = get()
	require.ErrorIs(t, err, ErrNotConnected, "a client built before the agent connects fails cleanly")
	assert.Contains(t, err.Error(), "cluster edge")

	seen := make(chan http.Header, 4)
	_, remove := connectAgent(t, r, "edge", hubtest.HTTPAgent(t, echoHeaders(seen)))
	body, err := get()
	require.NoError(t, err, "the same client works once the agent is connected")
	assert.Equal(t, "ok", body)
	h := <-seen
	assert.Equal(t, "backhaul:hub", h.Get("Impersonate-User"))
	assert.Equal(t, []string{"backhaul:propagators"}, h.Values("Impersonate-Group"))

	remove()
	_, err = get()
	require.ErrorIs(t, err, ErrNotConnected)

	_, _ = connectAgent(t, r, "edge", hubtest.HTTPAgent(t, echoHeaders(seen)))
	_, err = get()
	require.NoError(t, err, "and again after the agent reconnects")
	<-seen
	assert.Equal(t, 2.0, hubtest.Counter(t, reg, "backhaul_hub_streams_opened_total", map[string]string{"kind": "hub-apiserver"}),
		"one stream per session: requests reuse it")
}

func TestDialerHTTPCarriesRequestID(t *testing.T) {
	r, m, _ := newTestRegistry(t)
	d := NewDialer(r, nil, m, time.Second)
	seen := make(chan http.Header, 1)
	ids := make(chan string, 1)
	serve := hubtest.HTTPAgent(t, echoHeaders(seen))
	s, _ := connectAgent(t, r, "edge", func(ctx context.Context, in *tunnel.Incoming) {
		ids <- in.Request.RequestID
		serve(ctx, in)
	})

	req, err := http.NewRequestWithContext(WithRequestID(t.Context(), "req-7"), http.MethodGet, "http://ignored/api", nil)
	require.NoError(t, err)
	resp, err := d.HTTP(&Route{cluster: "edge", local: s}).RoundTrip(req)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	<-seen
	assert.Equal(t, "req-7", <-ids, "the stream header names the request it was opened for")
	pool := func() *http.Transport { return d.HTTP(&Route{cluster: "edge", local: s}).(localTransport).t }
	assert.Same(t, pool(), pool(), "one pool per session")
}

func TestDialerOpenRefused(t *testing.T) {
	r, m, reg := newTestRegistry(t)
	d := NewDialer(r, nil, m, time.Second)
	s, _ := connectAgent(t, r, "edge", hubtest.Rejecting(tunnel.CodeNotAllowed))
	_, err := d.Open(context.Background(), &Route{cluster: "edge", local: s}, tunnel.Request{Kind: tunnel.KindTCP, Address: "10.0.0.1:22"})
	var ce *ClusterError
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, "edge", ce.Cluster)
	var de *tunnel.DialError
	require.ErrorAs(t, err, &de)
	assert.Equal(t, tunnel.CodeNotAllowed, de.Code)
	assert.True(t, strings.HasPrefix(err.Error(), "cluster edge: "))
	assert.Equal(t, 0.0, hubtest.Counter(t, reg, "backhaul_hub_streams_opened_total", nil), "a refused stream is not counted as opened")
}

// A stream that fails on the newest session without the agent refusing
// (the agent is closing a session it did not want) goes to the older one.
func TestDialerFallsBackFromAFailingSession(t *testing.T) {
	r, m, _ := newTestRegistry(t)
	d := NewDialer(r, nil, m, time.Second)
	seen := make(chan http.Header, 1)
	connectAgent(t, r, "edge", hubtest.HTTPAgent(t, echoHeaders(seen)))
	hubSide, agentSide := hubtest.PipeSessions(t)
	newest, _ := add(t, r, "edge", hubSide, Agent{})
	require.NoError(t, agentSide.Close()) // the agent drops it at once
	route := &Route{cluster: "edge", local: newest}
	c, err := d.Open(t.Context(), route, tunnel.Request{Kind: tunnel.KindAPIServer})
	require.NoError(t, err, "the older session carries the stream")
	_ = c.Close()
}

// TestDialerHTTPRefused: HTTP streams go out early, so an agent's refusal
// comes back from RoundTrip rather than from the dial; it is the same
// *tunnel.DialError, which the front ends turn into the caller's status.
func TestDialerHTTPRefused(t *testing.T) {
	r, m, reg := newTestRegistry(t)
	d := NewDialer(r, nil, m, time.Second)
	s, _ := connectAgent(t, r, "edge", hubtest.Rejecting(tunnel.CodeNotAllowed))
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		req, err := http.NewRequestWithContext(t.Context(), method, "http://ignored/api", strings.NewReader("body"))
		require.NoError(t, err)
		_, err = d.HTTP(&Route{cluster: "edge", local: s}).RoundTrip(req)
		var de *tunnel.DialError
		require.ErrorAs(t, err, &de, method)
		assert.Equal(t, tunnel.CodeNotAllowed, de.Code, method)
	}
	assert.Equal(t, 0.0, hubtest.Counter(t, reg, "backhaul_hub_streams_opened_total", nil), "a refused stream is not counted as opened")
	assert.Eventually(t, func() bool { return hubtest.Gauge(t, reg, "backhaul_hub_streams_active", nil) == 0 },
		5*time.Second, 10*time.Millisecond, "refused streams are released")
}

// TestDialerHTTPFallsBackWhenTheSessionEndsBeforeTheReply: the newest
// session's agent drops the whole session once it has a stream request,
// as an agent closing a session it did not want does. A read went out
// early and is sent again along the older session; a write or an upgrade
// waited for the reply (it never went out) and goes along the older
// session too.
func TestDialerHTTPFallsBackWhenTheSessionEndsBeforeTheReply(t *testing.T) {
	for _, tc := range []struct {
		method, upgrade string
		early           bool // the stream goes out early
		fallsBack       bool
	}{
		{method: http.MethodGet, early: true, fallsBack: true},
		{method: http.MethodHead, early: true, fallsBack: true},
		{method: http.MethodPost, fallsBack: true},
		{method: http.MethodPatch, fallsBack: true},
		{method: http.MethodGet, upgrade: "websocket", fallsBack: true},
		{method: http.MethodPost, upgrade: "SPDY/3.1", fallsBack: true},
	} {
		t.Run(tc.method+tc.upgrade, func(t *testing.T) {
			r, m, _ := newTestRegistry(t)
			d := NewDialer(r, nil, m, time.Second)
			seen := make(chan http.Header, 1)
			connectAgent(t, r, "edge", hubtest.HTTPAgent(t, echoHeaders(seen)))
			// An early stream's request is being sent once the transport
			// reads its body; the agent drops the session then, so that
			// it surely went out early. A stream that waits for the reply
			// sends nothing before it: the agent drops the session at once.
			sending := make(chan struct{})
			hubSide, agentSide := hubtest.PipeSessions(t)
			hubtest.ServeAgent(t, agentSide, func(ctx context.Context, in *tunnel.Incoming) {
				if in.Request.Kind != tunnel.KindAPIServer {
					_ = in.Reject(tunnel.CodeUnavailable, "only the test's stream")
					return
				}
				if tc.early {
					select {
					case <-sending:
					case <-ctx.Done():
					}
				}
				_ = agentSide.Close()
			})
			newest, _ := add(t, r, "edge", hubSide, Agent{})
			body := &signalReader{r: strings.NewReader("body"), read: sending}
			req, err := http.NewRequestWithContext(t.Context(), tc.method, "http://ignored/api", body)
			require.NoError(t, err)
			req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader("body")), nil }
			if tc.upgrade != "" {
				req.Header.Set("Connection", "Upgrade")
				req.Header.Set("Upgrade", tc.upgrade)
			}
			resp, err := d.HTTP(&Route{cluster: "edge", local: newest}).RoundTrip(req)
			if !tc.fallsBack {
				require.ErrorIs(t, err, tunnel.ErrSessionClosed, "the front ends answer 503, not connected")
				return
			}
			require.NoError(t, err, "the older session carries the request")
			_ = resp.Body.Close()
			<-seen
		})
	}
}

// TestDialerWritesWaitForTheReply: a write's or an upgrade's stream does
// not go out early, so nothing of the request reaches a session before the
// agent accepted.
func TestDialerWritesWaitForTheReply(t *testing.T) {
	for _, tc := range []struct{ method, upgrade string }{
		{method: http.MethodPost},
		{method: http.MethodGet, upgrade: "websocket"},
	} {
		t.Run(tc.method+tc.upgrade, func(t *testing.T) { writeWaitsForTheReply(t, tc.method, tc.upgrade) })
	}
}

func writeWaitsForTheReply(t *testing.T, method, upgrade string) {
	r, m, _ := newTestRegistry(t)
	d := NewDialer(r, nil, m, time.Second)
	sending := make(chan struct{})
	var early atomic.Bool
	serve := hubtest.HTTPAgent(t, echoHeaders(make(chan http.Header, 1)))
	s, _ := connectAgent(t, r, "edge", func(ctx context.Context, in *tunnel.Incoming) {
		select {
		case <-sending:
			early.Store(true)
		default:
		}
		serve(ctx, in)
	})
	body := &signalReader{r: strings.NewReader("body"), read: sending}
	req, err := http.NewRequestWithContext(t.Context(), method, "http://ignored/api", body)
	require.NoError(t, err)
	if upgrade != "" {
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", upgrade)
	}
	resp, err := d.HTTP(&Route{cluster: "edge", local: s}).RoundTrip(req)
	require.NoError(t, err)
	_ = resp.Body.Close()
	assert.False(t, early.Load(), "the request's body was read before the agent answered")
}

// TestHubRequestsTravelOnTheirOwnStreamKind: the hub's own client (Config,
// and the prober) opens tunnel.KindHubAPIServer, which agents accept the
// hub's identity on, only towards agents that announced it; callers'
// requests (HTTP) are always tunnel.KindAPIServer.
func TestHubRequestsTravelOnTheirOwnStreamKind(t *testing.T) {
	for _, tc := range []struct {
		name           string
		features       []string
		wantHub, wantC tunnel.Kind
	}{
		{name: "agent serves the hub's kind", features: []string{tunnel.FeatureHubAPIServer}, wantHub: tunnel.KindHubAPIServer, wantC: tunnel.KindAPIServer},
		{name: "older agent", wantHub: tunnel.KindAPIServer, wantC: tunnel.KindAPIServer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, m, _ := newTestRegistry(t)
			d := NewDialer(r, nil, m, time.Second)
			kinds := make(chan tunnel.Kind, 4)
			serve := hubtest.HTTPAgent(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
			hubSide, agentSide := hubtest.PipeSessions(t)
			hubtest.ServeAgent(t, agentSide, func(ctx context.Context, in *tunnel.Incoming) {
				kinds <- in.Request.Kind
				serve(ctx, in)
			})
			s, _ := add(t, r, "edge", hubSide, Agent{Features: tc.features})

			get := func(rt http.RoundTripper) {
				req, err := http.NewRequest(http.MethodGet, "http://edge/version", nil)
				require.NoError(t, err)
				resp, err := rt.RoundTrip(req)
				require.NoError(t, err)
				_, _ = io.Copy(io.Discard, resp.Body)
				require.NoError(t, resp.Body.Close())
			}
			route := &Route{cluster: "edge", local: s}
			get(d.HubHTTP(route))
			assert.Equal(t, tc.wantHub, <-kinds)
			get(d.HTTP(route))
			assert.Equal(t, tc.wantC, <-kinds, "a caller's request never rides the hub's kind")
		})
	}
}

// signalReader closes read the first time it is read.
type signalReader struct {
	r    io.Reader
	read chan struct{}
	once sync.Once
}

func (s *signalReader) Read(p []byte) (int, error) {
	s.once.Do(func() { close(s.read) })
	return s.r.Read(p)
}

// unavailablePeers lists one peer for every cluster, which answers that
// it does not hold it; its connection ends with done.
type unavailablePeers struct {
	nodePeers
	done chan struct{}
}

func (u unavailablePeers) Holders(string) []Peer {
	return []Peer{endingPeer{fakePeer{name: "elsewhere"}, u.done}}
}

type endingPeer struct {
	fakePeer
	done chan struct{}
}

func (p endingPeer) Done() <-chan struct{} { return p.done }

// TestDrainingReplicaFallsBackToItsOwnSession: a draining replica sends
// new streams to the peers its agents move to; when none serves after
// all, its own session, still up, carries the request.
func TestDrainingReplicaFallsBackToItsOwnSession(t *testing.T) {
	r, m, _ := newTestRegistry(t)
	peers := unavailablePeers{done: make(chan struct{})}
	t.Cleanup(func() { close(peers.done) })
	d := NewDialer(r, peers, m, time.Second)
	seen := make(chan http.Header, 2)
	connectAgent(t, r, "edge", hubtest.HTTPAgent(t, echoHeaders(seen)))
	r.draining.Store(true)
	route, err := d.Route("edge")
	require.NoError(t, err)
	require.Nil(t, route.Local(), "a draining replica forwards")

	for _, method := range []string{http.MethodGet, http.MethodPost} {
		req, err := http.NewRequestWithContext(t.Context(), method, "http://ignored/api", nil)
		require.NoError(t, err)
		resp, err := d.HTTP(route).RoundTrip(req)
		require.NoError(t, err, method)
		_ = resp.Body.Close()
		<-seen
	}
	c, err := d.Open(t.Context(), route, tunnel.Request{Kind: tunnel.KindAPIServer})
	require.NoError(t, err, "a stream too")
	_ = c.Close()
}
