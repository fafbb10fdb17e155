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
	stops  []func()
}

func (r *tunnelRig) close() {
	for i := len(r.stops) - 1; i >= 0; i-- {
		r.stops[i]()
	}
}

// startTunnelRig starts origin, hub side and agent and returns once the
// agent's tunnel is up. big is the size of the origin's /big response.
func startTunnelRig(ctx context.Context, dir string, big int64) (_ *tunnelRig, err error) {
	r := &tunnelRig{}
	defer func() {
		if err != nil {
			r.close()
		}
	}()
	if r.origin, err = r.startOrigin(big); err != nil {
		return nil, err
	}
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
// from one pre-filled buffer) on loopback.
func (r *tunnelRig) startOrigin(big int64) (string, error) {
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
		return "", fmt.Errorf("origin: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: quietLog()}
	go func() { _ = srv.Serve(ln) }()
	r.stops = append(r.stops, func() { _ = srv.Close() })
	return ln.Addr().String(), nil
}

// startHubSide serves tunnel.Path behind TLS with a certificate from a
// throwaway CA, like the hub does, and hands every accepted session to the
// returned channel.
func (r *tunnelRig) startHubSide(dir string) (url string, caPEM []byte, _ <-chan *tunnel.Session, _ error) {
	ca, err := harness.NewCA(dir, "tunnel-ca")
	if err != nil {
		return "", nil, nil, err
	}
	certFile, keyFile, err := ca.Serving("tunnel-hub", []string{"127.0.0.1"})
	if err != nil {
		return "", nil, nil, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return "", nil, nil, err
	}
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}

	// Sessions live past the upgrade request; this context ends them.
	sctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	sessions := make(chan *tunnel.Session, 1)
	mux := http.NewServeMux()
	mux.HandleFunc(tunnel.Path, func(w http.ResponseWriter, req *http.Request) {
		sess, err := tunnel.Accept(w, req, tunnel.DefaultConfig())
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
	r.stops = append(r.stops, func() {
		cancel()
		_ = srv.Close()
		wg.Wait()
	})
	return "wss://" + ln.Addr().String(), ca.CertPEM, sessions, nil
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
	a, err := agent.New(agent.Config{
		Dialer: &tunnel.Dialer{
			URL:       hubURL,
			TLSConfig: tlsSettings{CAPEM: caPEM}.config(),
			Header:    h,
			Proxy:     noProxy,
			Config:    tunnel.DefaultConfig(),
		},
		Member:   &rest.Config{Host: "https://127.0.0.1:1"},
		Allow:    allow,
		Log:      hclog.New(&hclog.LoggerOptions{Name: "bench-agent", Level: hclog.Warn, Output: os.Stderr}),
		Registry: prometheus.NewRegistry(),
	})
	if err != nil {
		return err
	}
	actx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = a.Run(actx)
	}()
	r.stops = append(r.stops, func() {
		cancel()
		<-done
	})
	return nil
}
