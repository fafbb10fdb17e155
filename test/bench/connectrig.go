package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/rest"

	"backhaul.io/backhaul/agent"
	"backhaul.io/backhaul/hub"
	"backhaul.io/backhaul/hub/auth"
	"backhaul.io/backhaul/hub/frontend"
	"backhaul.io/backhaul/test/harness"
	"backhaul.io/backhaul/tunnel"
)

// connectCluster is the one cluster of the CONNECT rig; CONNECT names its
// API server as connectCluster+frontend.DefaultClusterSuffix:443.
const connectCluster = "bench"

// connectRig is the in-process topology of the CONNECT figures: the real hub
// (hub.New) with its CONNECT front end on loopback TCP, the real agent
// dialling it over TLS, and the bench's HTTP origin standing in for the
// member's API server. A CONNECT to the cluster becomes a raw stream to the
// API server's host:port, so the origin needs no TLS: TLS would be the
// caller's, end to end, and the same on the direct side.
type connectRig struct {
	origin string      // host:port of the origin (the "API server")
	hub    *hub.Server // for the leak check after the runs
	target string      // host:port every CONNECT names
	proxy  string      // host:port of the CONNECT front end
	stopList

	mu         sync.Mutex
	handshakes []time.Duration // of every dial: TCP to the proxy to the 200
}

// takeHandshakes returns the handshake times recorded so far and forgets them.
func (r *connectRig) takeHandshakes() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	hs := r.handshakes
	r.handshakes = nil
	return hs
}

// startConnectRig starts origin, hub and agent and returns once the hub has
// the agent's session. big is the size of the origin's /big response.
func startConnectRig(ctx context.Context, dir string, big int64) (_ *connectRig, err error) {
	r := &connectRig{}
	defer func() {
		if err != nil {
			r.close()
		}
	}()
	var stop func()
	if r.origin, stop, err = startOrigin(big); err != nil {
		return nil, err
	}
	r.add(stop)
	agentToken := rand.Text()
	hubURL, caPEM, err := r.startHub(ctx, dir, agentToken)
	if err != nil {
		return nil, err
	}
	h := http.Header{}
	h.Set("Authorization", "Bearer "+agentToken)
	h.Set(tunnel.HeaderCluster, connectCluster)
	// The agent dials its API server for a CONNECT stream by the host:port
	// of Member.Host; nothing else of it is used here.
	stop, err = runAgent(ctx, agent.Config{
		Dialer: agentDialer(hubURL, caPEM, h),
		Member: &rest.Config{Host: "https://" + r.origin},
	})
	if err != nil {
		return nil, err
	}
	r.add(stop)
	err = harness.WaitFor(ctx, 15*time.Second, 10*time.Millisecond, func() error {
		_, err := r.hub.Sessions().Get(connectCluster)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("the agent did not connect to the in-process hub: %w", err)
	}
	return r, nil
}

// startHub runs the real hub on loopback with one cluster whose agent token
// is agentToken, and one caller (callerToken) whom every cluster admits. It
// returns the agents' URL and the CA that signed the hub's certificate.
func (r *connectRig) startHub(ctx context.Context, dir, agentToken string) (string, []byte, error) {
	tlsCfg, caPEM, err := servingTLS(dir, "connect")
	if err != nil {
		return "", nil, err
	}
	agentFile := filepath.Join(dir, "connect-agent-tokens.csv")
	callerFile := filepath.Join(dir, "connect-caller-tokens.csv")
	if err := errors.Join(
		os.WriteFile(agentFile, []byte(agentToken+","+connectCluster+"\n"), 0o600),
		os.WriteFile(callerFile, []byte(callerToken+","+callerUser+","+callerUser+"\n"), 0o600),
	); err != nil {
		return "", nil, err
	}
	agents, err := auth.NewAgentTokens(agentFile, "")
	if err != nil {
		return "", nil, err
	}
	callers, err := auth.LoadStaticTokens(callerFile)
	if err != nil {
		return "", nil, err
	}
	cfg := hub.DefaultConfig()
	cfg.Listen, cfg.TLS, cfg.ConnectListen = "127.0.0.1:0", tlsCfg, "127.0.0.1:0"
	cfg.ConnectInsecureCredentials = true // plaintext CONNECT on loopback, as the peers' benches run
	cfg.AgentAuth, cfg.Clusters, cfg.Authn, cfg.Authz = agents, agents, callers, auth.AllowAuthenticated{}
	cfg.ShutdownGrace, cfg.ShutdownDelay = 5*time.Second, 0
	cfg.Log = hclog.New(&hclog.LoggerOptions{Name: "bench-hub", Level: hclog.Warn, Output: os.Stderr})
	cfg.Metrics = prometheus.NewRegistry()
	srv, err := hub.New(cfg)
	if err != nil {
		return "", nil, err
	}
	hctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var runErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		runErr = srv.Run(hctx)
	}()
	r.add(func() {
		// The agent has stopped: let the hub see its session end first, so
		// that the hub's shutdown does not cut a live session and log it.
		_ = harness.WaitFor(context.Background(), 2*time.Second, 5*time.Millisecond, func() error {
			if _, err := srv.Sessions().Get(connectCluster); err == nil {
				return errors.New("session still registered")
			}
			return nil
		})
		cancel()
		<-done
	})
	r.hub = srv
	// Run binds every listener before it serves, or returns.
	for srv.Addr() == nil || srv.ConnectAddr() == nil {
		select {
		case <-done:
			return "", nil, fmt.Errorf("hub: %w", runErr)
		case <-ctx.Done():
			return "", nil, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	r.proxy = srv.ConnectAddr().String()
	target := connectCluster + frontend.DefaultClusterSuffix + ":443"
	r.target = target
	return "wss://" + srv.Addr().String(), caPEM, nil
}

// dial opens a raw stream to the cluster's API server through the CONNECT
// front end, as kubectl with a proxy-url does: TCP to the proxy, CONNECT,
// the 200. It is a dialFunc; the address asked for is ignored.
func (r *connectRig) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	start := time.Now()
	c, err := connectVia(ctx, r.proxy, r.target, callerToken)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.handshakes = append(r.handshakes, time.Since(start))
	r.mu.Unlock()
	return c, nil
}

// connectVia opens a raw stream to target through the hub's plain CONNECT
// front end at proxy, authenticating with token.
func connectVia(ctx context.Context, proxy, target, token string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", proxy)
	if err != nil {
		return nil, fmt.Errorf("dial CONNECT proxy: %w", err)
	}
	return harness.Connect(ctx, c, target, "Bearer "+token)
}
