package hub

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"backhaul.io/backhaul/hub/auth"
	"backhaul.io/backhaul/hub/frontend"
	"backhaul.io/backhaul/hub/peer"
	"backhaul.io/backhaul/pkg/logging"
)

// Run serves until ctx ends, then drains (see drain) and returns. Its
// steps: start the background work (host cluster, directory, peers,
// probes), listen, serve, drain, stop the background work.
func (s *Server) Run(ctx context.Context) error {
	// Background work outlives ctx by the drain: forwarding to peers and
	// the directory must keep working while agents move away.
	bg, stopBg := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stopBg()
	if s.cfg.Host != nil {
		stop, err := s.startHost(bg, &wg)
		if err != nil {
			return err
		}
		defer stop()
	}
	for _, r := range s.cfg.Reloaders {
		wg.Go(func() {
			if err := r.Start(bg); err != nil {
				s.cfg.Log.Error("certificate reloading stopped", "error", err)
			}
		})
	}
	wg.Go(func() { _ = s.prober.Run(bg) })
	wg.Go(func() { _ = s.status.Run(bg) })
	wg.Go(func() { s.health.run(bg) })
	// bg ends after the listeners have closed: the audit log takes every
	// request's last event, then closes.
	wg.Go(func() {
		if err := s.audit.Run(bg); err != nil {
			s.cfg.Log.Error("closing the audit log", "error", err)
		}
	})
	if s.peers != nil {
		wg.Go(func() { _ = s.peers.Run(bg) })
		wg.Go(func() { _ = s.identity.Run(bg) })
	}
	if d := s.cfg.ConnectSocketDir; d != "" {
		socks, err := s.connect.Sockets(frontend.ClusterSocketsConfig{
			Dir: d, User: &auth.User{Name: s.cfg.ConnectUDSUser}, Clusters: s.cfg.Clusters.(frontend.ClusterNames),
			Resync: time.Second, Server: s.connectServer, Log: s.cfg.Log.Named(logging.Connect),
		})
		if err != nil {
			return err
		}
		wg.Go(func() { _ = socks.Run(bg) })
	}
	ls, err := s.listen()
	if err != nil {
		return err
	}
	errc := make(chan error, len(ls))
	var serving sync.WaitGroup
	for _, l := range ls {
		serving.Go(func() {
			if err := l.srv.Serve(l.ln); !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		})
	}
	s.ready.Store(true)
	s.cfg.Log.Info("hub serving", "replica", s.cfg.Replica, "listen", s.Addr().String(), "metrics", s.cfg.AdminListen,
		"connect", s.cfg.ConnectListen, "connect_uds", s.cfg.ConnectUDS, "connect_socket_dir", s.cfg.ConnectSocketDir, "peer", s.peerListen())
	select {
	case <-ctx.Done():
		s.drain(bg)
	case err = <-errc:
	}
	s.stop(ls)
	serving.Wait()
	return err
}

// startHost starts the host manager (informers, the session directory) and
// the singleton campaign, and waits for the caches: agents are only
// admitted once the Cluster informer has synced. stop ends the manager,
// withdrawing this replica from the directory.
func (s *Server) startHost(ctx context.Context, wg *sync.WaitGroup) (stop func(), err error) {
	mgr := s.cfg.Host.Manager
	mctx, cancel := context.WithCancel(ctx)
	mgrDone := make(chan error, 1)
	go func() { mgrDone <- mgr.Start(mctx) }()
	if !mgr.GetCache().WaitForCacheSync(mctx) {
		cancel()
		return nil, fmt.Errorf("host cluster: caches did not sync (are the CRDs installed?): %v", <-mgrDone)
	}
	if s.singleton != nil {
		wg.Go(func() { _ = s.singleton.Run(mctx) })
	} else {
		wg.Go(func() {
			if err := s.singletonWork(mctx); err != nil && mctx.Err() == nil {
				s.cfg.Log.Error("singleton work stopped", "error", err)
			}
		})
	}
	return func() {
		cancel()
		if err := <-mgrDone; err != nil {
			s.cfg.Log.Warn("host manager stopped", "error", err)
		}
	}, nil
}

// served is one listener and the server on it.
type served struct {
	srv *http.Server
	ln  net.Listener
}

// listen opens every configured listener, or none.
func (s *Server) listen() (ls []served, err error) {
	defer func() {
		if err != nil {
			for _, l := range ls {
				_ = l.ln.Close()
			}
		}
	}()
	open := func(network, addr string, store *atomic.Value) (net.Listener, error) {
		ln, err := net.Listen(network, addr)
		if err != nil {
			return nil, fmt.Errorf("listen %s: %w", addr, err)
		}
		if store != nil {
			store.Store(ln.Addr())
		}
		return ln, nil
	}
	ln, err := open("tcp", s.cfg.Listen, &s.addr)
	if err != nil {
		return ls, err
	}
	ls = append(ls, served{s.mainServer(s.handler, s.cfg.TLS), tls.NewListener(ln, s.cfg.TLS)})
	if a := s.cfg.AdminListen; a != "" {
		if ln, err = open("tcp", a, nil); err != nil {
			return ls, err
		}
		ls = append(ls, served{&http.Server{Handler: s.admin, ReadHeaderTimeout: 10 * time.Second}, ln})
	}
	if a := s.cfg.ConnectListen; a != "" {
		if ln, err = open("tcp", a, &s.connectAddr); err != nil {
			return ls, err
		}
		if s.cfg.ConnectTLS {
			ln = tls.NewListener(ln, http1Only(s.cfg.TLS))
		}
		ls = append(ls, served{s.connectServer(s.connect), ln})
	}
	if p := s.cfg.ConnectUDS; p != "" {
		_ = os.Remove(p)
		if ln, err = open("unix", p, nil); err != nil {
			return ls, err
		}
		ls = append(ls, served{s.connectServer(s.connect.ForSocket(&auth.User{Name: s.cfg.ConnectUDSUser})), ln})
	}
	if a := s.peerListen(); a != "" {
		if ln, err = open("tcp", a, &s.peerAddr); err != nil {
			return ls, err
		}
		mux := http.NewServeMux()
		mux.Handle(peer.Path, s.peers)
		ptls := s.identity.ServerTLS()
		ls = append(ls, served{s.mainServer(mux, ptls), tls.NewListener(ln, ptls)})
	}
	return ls, nil
}

func (s *Server) peerListen() string {
	if s.peers == nil {
		return ""
	}
	return s.cfg.Host.PeerListen
}

func (s *Server) mainServer(h http.Handler, tlsCfg *tls.Config) *http.Server {
	return &http.Server{
		Handler:           h,
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: 10 * time.Second,
		// No read or write timeout: watches and tunnels live for hours.
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 64 << 10,
		// A client-go process's watches and requests share an HTTP/2
		// connection: let one carry 1000 (Go's default is 250,
		// kube-apiserver's 100), so 500 informers need one connection;
		// the hub's per-caller limits bound what each may hold open.
		HTTP2:    &http.HTTP2Config{MaxConcurrentStreams: 1000},
		ErrorLog: s.cfg.Log.Named("http").StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug}),
	}
}

func (s *Server) connectServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          s.cfg.Log.Named(logging.Connect).StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug}),
	}
}
