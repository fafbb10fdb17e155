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
	"time"

	"github.com/hashicorp/go-hclog"

	"backhaul.io/backhaul/hub/auth"
	"backhaul.io/backhaul/pkg/logging"
)

// Run serves until ctx ends, then drains for up to ShutdownTimeout:
// start the host cluster's manager (if any), listen, serve, drain.
func (s *Server) Run(ctx context.Context) error {
	if s.cfg.Host != nil {
		stop, err := s.startHost(ctx)
		if err != nil {
			return err
		}
		defer stop()
	}
	ls, err := s.listen()
	if err != nil {
		return err
	}
	errc := make(chan error, len(ls))
	var wg sync.WaitGroup
	for _, l := range ls {
		wg.Go(func() {
			if err := l.srv.Serve(l.ln); !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		})
	}
	s.ready.Store(true)
	s.cfg.Log.Info("hub serving", "listen", s.Addr().String(), "admin", s.cfg.AdminListen,
		"connect", s.cfg.ConnectListen, "connect_uds", s.cfg.ConnectUDS)
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	s.drain(ctx, ls)
	wg.Wait()
	return err
}

// startHost starts the host manager (informers, leader election,
// controllers) and leadership, and waits for the caches: agents are only
// admitted once the Cluster informer has synced. stop ends both; the
// manager lives exactly as long as the listeners.
func (s *Server) startHost(ctx context.Context) (stop func(), err error) {
	mgr := s.cfg.Host.Manager
	mctx, cancel := context.WithCancel(ctx)
	mgrDone := make(chan error, 1)
	go func() { mgrDone <- mgr.Start(mctx) }()
	if !mgr.GetCache().WaitForCacheSync(mctx) {
		cancel()
		return nil, fmt.Errorf("host cluster: caches did not sync (is the Cluster CRD installed?): %v", <-mgrDone)
	}
	leadDone := make(chan struct{})
	go func() {
		defer close(leadDone)
		s.leadership.Run(mctx)
	}()
	return func() { cancel(); <-leadDone; <-mgrDone }, nil
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
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return ls, fmt.Errorf("listen %s: %w", s.cfg.Listen, err)
	}
	s.addr.Store(ln.Addr())
	ls = append(ls, served{s.mainServer(), tls.NewListener(ln, s.cfg.TLS)})
	if a := s.cfg.AdminListen; a != "" {
		if ln, err = net.Listen("tcp", a); err != nil {
			return ls, fmt.Errorf("listen %s: %w", a, err)
		}
		ls = append(ls, served{&http.Server{Handler: s.admin, ReadHeaderTimeout: 10 * time.Second}, ln})
	}
	if a := s.cfg.ConnectListen; a != "" {
		if ln, err = net.Listen("tcp", a); err != nil {
			return ls, fmt.Errorf("listen %s: %w", a, err)
		}
		s.connectAddr.Store(ln.Addr())
		if s.cfg.ConnectTLS {
			ln = tls.NewListener(ln, s.cfg.TLS)
		}
		ls = append(ls, served{s.connectServer(s.connect), ln})
	}
	if p := s.cfg.ConnectUDS; p != "" {
		_ = os.Remove(p)
		if ln, err = net.Listen("unix", p); err != nil {
			return ls, fmt.Errorf("listen %s: %w", p, err)
		}
		ls = append(ls, served{s.connectServer(s.connect.ForSocket(&auth.User{Name: s.cfg.ConnectUDSUser})), ln})
	}
	return ls, nil
}

func (s *Server) mainServer() *http.Server {
	return &http.Server{
		Handler:           s.handler,
		TLSConfig:         s.cfg.TLS,
		ReadHeaderTimeout: 10 * time.Second,
		// No read or write timeout: watches and tunnels live for hours.
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       s.cfg.Log.Named("http").StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug}),
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

// drain stops taking work: not ready, every tunnel session closed (their
// hijacked connections are not Shutdown's to track) and refused from now
// on, then requests in flight get up to ShutdownTimeout.
func (s *Server) drain(ctx context.Context, ls []served) {
	s.ready.Store(false)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	s.sessions.CloseAll()
	for _, l := range ls {
		_ = l.srv.Shutdown(sctx)
	}
}
