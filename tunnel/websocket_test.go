package tunnel

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDialHandshakeRefused(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		reason     string
		retryAfter string // the Retry-After header, if any
		permanent  bool
		wantRetry  time.Duration
	}{
		{name: "unauthorized", status: http.StatusUnauthorized, reason: "invalid token for cluster alpha", permanent: true},
		{name: "forbidden", status: http.StatusForbidden, reason: "cluster alpha is disabled", permanent: true},
		{name: "upgrade required", status: http.StatusUpgradeRequired, reason: "this hub speaks backhaul.io/v2", permanent: true},
		{name: "unavailable", status: http.StatusServiceUnavailable, reason: "draining", permanent: false},
		{name: "draining with retry-after", status: http.StatusServiceUnavailable, reason: "draining", retryAfter: "5", wantRetry: 5 * time.Second},
		{name: "too many with retry-after", status: http.StatusTooManyRequests, reason: "slow down", retryAfter: "120", wantRetry: 2 * time.Minute},
		{name: "retry-after as a date is ignored", status: http.StatusServiceUnavailable, reason: "draining", retryAfter: "Wed, 21 Oct 2015 07:28:00 GMT"},
		{name: "retry-after on another status is ignored", status: http.StatusInternalServerError, reason: "oops", retryAfter: "5"},
		{name: "internal error", status: http.StatusInternalServerError, reason: "oops", permanent: false},
		{name: "not found", status: http.StatusNotFound, reason: "no tunnel here", permanent: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				if tc.retryAfter != "" {
					w.Header().Set("Retry-After", tc.retryAfter)
				}
				http.Error(w, tc.reason, tc.status)
			}))
			defer srv.Close()
			d := testDialer(t, srv, nil)
			sess, err := d.Dial(context.Background())
			require.Error(t, err)
			assert.Nil(t, sess)
			var he *HandshakeError
			require.ErrorAs(t, err, &he)
			assert.Equal(t, tc.status, he.StatusCode)
			assert.Contains(t, he.Reason, tc.reason)
			assert.Equal(t, tc.permanent, IsPermanent(err))
			assert.Equal(t, tc.wantRetry, he.RetryAfter)
		})
	}
}

// A refused dial's connection is never reused: behind a load balancer the
// next dial must be a new connection, which may reach another replica,
// not the draining one that refused (found with real hub Pods: an agent
// was refused six times in a row by a replica that had left the Service).
func TestRefusedDialsUseNewConnections(t *testing.T) {
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "this hub replica is draining; connect to another", http.StatusServiceUnavailable)
	}))
	srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			mu.Lock()
			conns[c] = true
			mu.Unlock()
		}
	}
	srv.StartTLS()
	defer srv.Close()
	d := testDialer(t, srv, nil)
	const dials = 5
	for range dials {
		_, err := d.Dial(context.Background())
		var he *HandshakeError
		require.ErrorAs(t, err, &he)
		require.Equal(t, http.StatusServiceUnavailable, he.StatusCode)
	}
	mu.Lock()
	defer mu.Unlock()
	assert.Len(t, conns, dials, "one connection per dial")
}

func TestDialSendsHeadersAndPath(t *testing.T) {
	got := make(chan *http.Request, 1)
	accepted := make(chan *Session, 1)
	cfg := testConfig(t)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r
		s, err := Accept(w, r, cfg)
		if err != nil {
			return
		}
		accepted <- s
	}))
	defer srv.Close()
	d := testDialer(t, srv, nil)
	d.Header = http.Header{}
	d.Header.Set("Authorization", "Bearer secret-token-0123456789")
	d.Header.Set(HeaderCluster, "alpha")
	d.Header.Set(HeaderAgentVersion, "v1.2.3")
	sess, err := d.Dial(context.Background())
	require.NoError(t, err)
	defer sess.Close()
	server := <-accepted
	defer server.Close()

	r := <-got
	assert.Equal(t, Path, r.URL.Path)
	assert.Equal(t, "Bearer secret-token-0123456789", r.Header.Get("Authorization"))
	assert.Equal(t, "alpha", r.Header.Get(HeaderCluster))
	assert.Equal(t, "v1.2.3", r.Header.Get(HeaderAgentVersion))
	assert.True(t, offers(r.Header, Subprotocol))
	assert.NotContains(t, r.Header.Get("Sec-WebSocket-Extensions"), "permessage-deflate", "compression must be off")
}

// TestAcceptRefusesOtherSubprotocol speaks to Accept with a plain websocket
// client, as an agent of another protocol version would.
func TestAcceptRefusesOtherSubprotocol(t *testing.T) {
	tests := []struct {
		name   string
		protos []string
	}{
		{name: "other version", protos: []string{"backhaul.io/v0"}},
		{name: "none", protos: nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			acceptErr := make(chan error, 1)
			srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				s, err := Accept(w, r, testConfig(t))
				if s != nil {
					_ = s.Close()
				}
				acceptErr <- err
			}))
			defer srv.Close()
			client := srv.Client()
			defer client.CloseIdleConnections()
			c, resp, err := websocket.Dial(context.Background(), "wss://"+srv.Listener.Addr().String()+Path, &websocket.DialOptions{
				HTTPClient:   client,
				Subprotocols: tc.protos,
			})
			require.Error(t, err)
			if c != nil {
				_ = c.CloseNow()
			}
			require.NotNil(t, resp)
			assert.Equal(t, http.StatusUpgradeRequired, resp.StatusCode)
			body, _ := io.ReadAll(resp.Body)
			assert.Contains(t, string(body), Subprotocol, "the refusal names the protocol the hub speaks")
			require.ErrorIs(t, <-acceptErr, ErrVersion)
		})
	}
}

// TestDialRejectsHubWithoutSubprotocol: a server that upgrades but does not
// choose the subprotocol is not a hub this agent can talk to.
func TestDialRejectsHubWithoutSubprotocol(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		_, _, _ = c.Read(context.Background()) // until the client closes
	}))
	defer srv.Close()
	d := testDialer(t, srv, nil)
	sess, err := d.Dial(context.Background())
	require.ErrorIs(t, err, ErrVersion)
	assert.Nil(t, sess)
}

func TestDialUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())

	srv := httptest.NewUnstartedServer(nil) // only for testDialer's certificate plumbing
	srv.StartTLS()
	defer srv.Close()
	d := testDialer(t, srv, nil)
	d.URL = "wss://" + addr
	_, err = d.Dial(context.Background())
	require.Error(t, err)
	var he *HandshakeError
	assert.False(t, errors.As(err, &he), "a refused TCP connection is not a handshake refusal")
	assert.False(t, IsPermanent(err))
}

func TestDialerURL(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr bool
	}{
		{in: "wss://hub.example.com", want: "wss://hub.example.com/v1/tunnel"},
		{in: "wss://hub.example.com:8443/", want: "wss://hub.example.com:8443/v1/tunnel"},
		{in: "https://hub.example.com", want: "wss://hub.example.com/v1/tunnel"},
		{in: "wss://hub.example.com/custom/path", want: "wss://hub.example.com/custom/path"},
		{in: "ws://127.0.0.1:8080", want: "ws://127.0.0.1:8080/v1/tunnel"},
		{in: "http://127.0.0.1:8080", want: "ws://127.0.0.1:8080/v1/tunnel"},
		{in: "ftp://hub.example.com", wantErr: true},
		{in: "hub.example.com:8443", wantErr: true},
		{in: "://bad", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := (&Dialer{URL: tc.in}).url()
			if tc.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestOffers(t *testing.T) {
	tests := []struct {
		name   string
		values []string
		want   bool
	}{
		{name: "only", values: []string{Subprotocol}, want: true},
		{name: "in a list", values: []string{"a, " + Subprotocol + " ,b"}, want: true},
		{name: "second header", values: []string{"a", Subprotocol}, want: true},
		{name: "absent", values: []string{"backhaul.io/v0"}},
		{name: "prefix only", values: []string{Subprotocol + "x"}},
		{name: "none"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			for _, v := range tc.values {
				h.Add("Sec-WebSocket-Protocol", v)
			}
			assert.Equal(t, tc.want, offers(h, Subprotocol))
		})
	}
}

// TestHubReplicaHeaders: headers the hub sets before Accept stay on the 101
// answer (coder/websocket only adds its own), and the dialling side reads
// them; the accepting side has none.
func TestHubReplicaHeaders(t *testing.T) {
	tests := []struct {
		name         string
		replica      string
		replicas     string
		wantReplica  string
		wantReplicas int
	}{
		{name: "both", replica: "hub-7d9f-abcde", replicas: "3", wantReplica: "hub-7d9f-abcde", wantReplicas: 3},
		{name: "none"},
		{name: "name only", replica: "hub-0", wantReplica: "hub-0"},
		{name: "count not a number", replica: "hub-0", replicas: "three", wantReplica: "hub-0"},
		{name: "negative count", replica: "hub-0", replicas: "-2", wantReplica: "hub-0"},
		{name: "count too large", replica: "hub-0", replicas: "70000", wantReplica: "hub-0"},
		{name: "name too long", replica: strings.Repeat("h", MaxReplicaLen+1), replicas: "2", wantReplicas: 2},
		{name: "longest name", replica: strings.Repeat("h", MaxReplicaLen), replicas: "1", wantReplica: strings.Repeat("h", MaxReplicaLen), wantReplicas: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			accepted := make(chan *Session, 1)
			srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.replica != "" {
					w.Header().Set(HeaderHubReplica, tc.replica)
				}
				if tc.replicas != "" {
					w.Header().Set(HeaderHubReplicas, tc.replicas)
				}
				if s, err := Accept(w, r, cfg); err == nil {
					accepted <- s
				}
			}))
			defer srv.Close()

			// The raw answer, as any websocket client sees it.
			client := srv.Client()
			defer client.CloseIdleConnections()
			c, resp, err := websocket.Dial(context.Background(), "wss://"+srv.Listener.Addr().String()+Path, &websocket.DialOptions{
				HTTPClient:   client,
				Subprotocols: []string{Subprotocol},
			})
			require.NoError(t, err)
			assert.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
			assert.Equal(t, tc.replica, resp.Header.Get(HeaderHubReplica))
			assert.Equal(t, tc.replicas, resp.Header.Get(HeaderHubReplicas))
			_ = c.CloseNow()
			raw := <-accepted
			_ = raw.Close()

			// Through the Dialer.
			sess, err := testDialer(t, srv, nil).Dial(context.Background())
			require.NoError(t, err)
			defer sess.Close()
			server := <-accepted
			defer server.Close()
			assert.Equal(t, tc.wantReplica, sess.Replica())
			assert.Equal(t, tc.wantReplicas, sess.Replicas())
			assert.Empty(t, server.Replica(), "the accepting side learns nothing from its own answer")
			assert.Zero(t, server.Replicas())
		})
	}
}
