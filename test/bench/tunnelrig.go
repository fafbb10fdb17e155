package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/rest"

	"backhaul.io/backhaul/agent"
	"backhaul.io/backhaul/test/harness"
	"backhaul.io/backhaul/tunnel"
)

// smallBody is the size of the origin's small response.
const smallBody = 100

// tunnelRig is the in-process topology of the tunnel figures: an HTTP
// origin that only the agent dials, a hub-side tunnel endpoint behind a real
// TLS listener on loopback, and the real agent (agent.New) dialling it with
// the origin on its TCP allowlist.
type tunnelRig struct {
	origin string          // host:port of the origin
	hub    *tunnel.Session // hub side of the one tunnel
	link   rigLink
	stopList
}

// rigLink shapes the tunnel of a rig: its stream window (0: the default)
// and a delay each way between agent and hub (0: plain loopback).
type rigLink struct {
	window uint32
	oneWay time.Duration
}

func (l rigLink) tunnelConfig() *tunnel.Config {
	c := tunnel.DefaultConfig()
	if l.window > 0 {
		c.StreamWindow = l.window
	}
	return c
}

// stopList stops what a rig started, last first.
type stopList struct{ fns []func() }

func (l *stopList) add(f func()) { l.fns = append(l.fns, f) }

func (l *stopList) close() {
	for i := len(l.fns) - 1; i >= 0; i-- {
		l.fns[i]()
	}
}

// startTunnelRig starts origin, hub side and agent and returns once the
// agent's tunnel is up. big is the size of the origin's /big response.
func startTunnelRig(ctx context.Context, dir string, big int64) (_ *tunnelRig, err error) {
	return startLinkRig(ctx, dir, big, rigLink{})
}

// startLinkRig is startTunnelRig over link.
func startLinkRig(ctx context.Context, dir string, big int64, link rigLink) (_ *tunnelRig, err error) {
	r := &tunnelRig{link: link}
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
	hubURL, caPEM, sessions, err := r.startHubSide(dir)
	if err != nil {
		return nil, err
	}
	if err := r.startAgent(ctx, hubURL, caPEM); err != nil {
		return nil, err
	}
	select {
	case r.hub = <-sessions:
		return r, nil
	case <-time.After(15 * time.Second):
		return nil, errors.New("the agent did not connect to the in-process hub within 15s")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// startOrigin serves /small (smallBody bytes) and /big (big bytes streamed
// from one pre-filled buffer) on loopback. The tunnel rig reaches it as a
// TCP destination, the CONNECT rig as the member's API server address.
func startOrigin(big int64) (addr string, stop func(), _ error) {
	small := make([]byte, smallBody)
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte('a' + i%26)
	}
	copy(small, chunk)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /small", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", strconv.Itoa(len(small)))
		_, _ = w.Write(small)
	})
	mux.HandleFunc("GET /big", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(big, 10))
		for left := big; left > 0; {
			n := min(left, int64(len(chunk)))
			if _, err := w.Write(chunk[:n]); err != nil {
				return
			}
			left -= n
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("origin: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: quietLog()}
	go func() { _ = srv.Serve(ln) }()
	return ln.Addr().String(), func() { _ = srv.Close() }, nil
}

// startHubSide serves tunnel.Path behind TLS with a certificate from a
// throwaway CA, like the hub does, and hands every accepted session to the
// returned channel.
func (r *tunnelRig) startHubSide(dir string) (url string, caPEM []byte, _ <-chan *tunnel.Session, _ error) {
	tlsCfg, caPEM, err := servingTLS(dir, "tunnel")
	if err != nil {
		return "", nil, nil, err
	}

	// Sessions live past the upgrade request; this context ends them.
	sctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	sessions := make(chan *tunnel.Session, 1)
	mux := http.NewServeMux()
	mux.HandleFunc(tunnel.Path, func(w http.ResponseWriter, req *http.Request) {
		sess, err := tunnel.Accept(w, req, r.link.tunnelConfig())
		if err != nil {
			return
		}
		select {
		case sessions <- sess:
		default: // a reconnect nobody waits for
		}
		wg.Add(1)
		defer wg.Done()
		_ = sess.Serve(sctx, func(_ context.Context, in *tunnel.Incoming) {
			_ = in.Reject(tunnel.CodeNotAllowed, "the bench hub accepts no streams")
		})
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		return "", nil, nil, fmt.Errorf("hub side: %w", err)
	}
	srv := &http.Server{Handler: mux, TLSConfig: tlsCfg, ReadHeaderTimeout: 10 * time.Second, ErrorLog: quietLog()}
	go func() { _ = srv.Serve(tls.NewListener(ln, tlsCfg)) }()
	r.add(func() {
		cancel()
		_ = srv.Close()
		wg.Wait()
	})
	addr := ln.Addr().String()
	if r.link.oneWay > 0 {
		relay, stop, err := startDelayRelay(addr, r.link.oneWay)
		if err != nil {
			return "", nil, nil, err
		}
		r.add(stop)
		addr = relay
	}
	return "wss://" + addr, caPEM, sessions, nil
}

// servingTLS issues a certificate for 127.0.0.1 from a throwaway CA, with
// files <dir>/<name>-ca.* and <dir>/<name>-hub.*, and returns the server
// side's TLS config and the CA that clients trust.
func servingTLS(dir, name string) (*tls.Config, []byte, error) {
	ca, err := harness.NewCA(dir, name+"-ca")
	if err != nil {
		return nil, nil, err
	}
	certFile, keyFile, err := ca.Serving(name+"-hub", []string{"127.0.0.1"})
	if err != nil {
		return nil, nil, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}, ca.CertPEM, nil
}

// startAgent runs the real agent with the origin on its allowlist. Its
// member API server is never used: these figures open only TCP streams.
func (r *tunnelRig) startAgent(ctx context.Context, hubURL string, caPEM []byte) error {
	allow, err := agent.ParseAllowlist([]string{r.origin})
	if err != nil {
		return err
	}
	h := http.Header{}
	h.Set(tunnel.HeaderCluster, "bench")
	d := agentDialer(hubURL, caPEM, h)
	d.Config = r.link.tunnelConfig()
	stop, err := runAgent(ctx, agent.Config{
		Dialer: d,
		Member: &rest.Config{Host: "https://127.0.0.1:1"},
		Allow:  allow,
	})
	if err != nil {
		return err
	}
	r.add(stop)
	return nil
}

// agentDialer dials hubURL over TLS trusting caPEM, never through a proxy.
func agentDialer(hubURL string, caPEM []byte, h http.Header) *tunnel.Dialer {
	return &tunnel.Dialer{
		URL:       hubURL,
		TLSConfig: tlsSettings{CAPEM: caPEM}.config(),
		Header:    h,
		Proxy:     noProxy,
		Config:    tunnel.DefaultConfig(),
	}
}

// runAgent runs the real agent (agent.New) with cfg, adding a warn-level
// logger and a fresh registry, until stop is called.
func runAgent(ctx context.Context, cfg agent.Config) (stop func(), _ error) {
	cfg.Log = hclog.New(&hclog.LoggerOptions{Name: "bench-agent", Level: hclog.Warn, Output: os.Stderr})
	cfg.Registry = prometheus.NewRegistry()
	a, err := agent.New(cfg)
	if err != nil {
		return nil, err
	}
	actx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = a.Run(actx)
	}()
	return func() {
		cancel()
		<-done
	}, nil
}
