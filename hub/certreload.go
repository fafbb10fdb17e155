package hub

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"slices"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	certutil "k8s.io/client-go/util/cert"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"

	"backhaul.io/backhaul/hub/auth"
)

// Reloader keeps something read from disk current until ctx ends (the
// serving certificate, the client CA bundle). Run runs each in the
// background.
type Reloader interface {
	Start(ctx context.Context) error
}

// reloadEvery is how often certificate files are read again. Mounted
// Secrets change by a symlink swap that file events miss on some
// set-ups, so both watchers also poll.
const reloadEvery = 10 * time.Second

// servingTLS is the listener's TLS. A serving certificate from files is
// read again when they change (a renewed certificate reaches new
// handshakes; connections and agent sessions already up keep theirs);
// with --registry=kube and no files the hub may issue its own later.
func (o *Options) servingTLS(cfg *Config) (*tls.Config, error) {
	// HTTP/2 for callers: one connection carries a client's requests and
	// watches. Upgrades (exec, attach, port-forward; the agents' tunnel)
	// still negotiate HTTP/1.1: client-go's SPDY and websocket dialers and
	// our tunnel dialer offer nothing else.
	c := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}
	if o.TLSCertFile == "" {
		return c, nil
	}
	w, err := certwatcher.New(o.TLSCertFile, o.TLSKeyFile)
	if err != nil {
		return nil, fmt.Errorf("serving certificate: %w", err)
	}
	w = w.WithWatchInterval(o.reloadEvery())
	log := cfg.Log.Named("certs")
	w.RegisterCallback(func(cert tls.Certificate) {
		log.Info("serving certificate reloaded", "file", o.TLSCertFile, "not_after", notAfter(cert))
	})
	c.GetCertificate = w.GetCertificate
	cfg.Reloaders = append(cfg.Reloaders, w)
	return c, nil
}

func (o *Options) reloadEvery() time.Duration { return cmp.Or(o.certReloadEvery, reloadEvery) }

// currentCert is the certificate c serves now, nil if none yet.
func currentCert(c *tls.Config) *tls.Certificate {
	if c.GetCertificate != nil {
		cert, err := c.GetCertificate(&tls.ClientHelloInfo{})
		if err == nil && cert != nil {
			return cert
		}
	}
	if len(c.Certificates) > 0 {
		return &c.Certificates[0]
	}
	return nil
}

func notAfter(cert tls.Certificate) time.Time {
	if cert.Leaf != nil {
		return cert.Leaf.NotAfter
	}
	if leaf, err := x509.ParseCertificate(cert.Certificate[0]); err == nil {
		return leaf.NotAfter
	}
	return time.Time{}
}

// requestClientCerts makes the listeners request (not require) client
// certificates, naming the CAs the hub trusts: the authenticators verify
// them. The --client-ca-file bundle is read again when it changes, for
// the caller authenticator and for the CAs the handshake names (a client
// sends only a certificate of a CA it is asked for); so is the hub CA
// (hubCAs, nil without one; caReload). fileCAs are the client CAs at
// start.
func (o *Options) requestClientCerts(cfg *Config, callers auth.Union, fileCAs []*x509.Certificate, hubCAs func() []*x509.Certificate) {
	if len(fileCAs) == 0 && hubCAs == nil {
		return
	}
	var cc *auth.ClientCerts
	for _, a := range callers {
		if c, ok := a.(*auth.ClientCerts); ok {
			cc = c
		}
	}
	var hint atomic.Pointer[x509.CertPool]
	// named recomputes the hint from both sources as they are now.
	named := func() {
		cas := slices.Clone(fileCAs)
		if cc != nil && o.ClientCAFile != "" {
			cas = cc.CAs()
		}
		if hubCAs != nil {
			cas = append(cas, hubCAs()...)
		}
		hint.Store(poolOf(cas))
	}
	named()
	cfg.TLS.ClientAuth = tls.RequestClientCert
	cfg.TLS.ClientCAs = hint.Load()
	base := cfg.TLS
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c := base.Clone()
		c.GetConfigForClient = nil
		c.ClientCAs = hint.Load()
		return c, nil
	}
	cfg.caNamesChanged = named
	if o.ClientCAFile == "" || cc == nil {
		return
	}
	cfg.Reloaders = append(cfg.Reloaders, newCAFile(o.ClientCAFile, o.reloadEvery(), cfg.Log.Named("certs"),
		func(file []*x509.Certificate) {
			cc.SetCAs(file...)
			named()
		}))
}

// http1Only serves base's TLS on a listener whose handlers take over the
// connection (CONNECT): HTTP/2 has no such thing, so it offers only
// HTTP/1.1. It reads base at each handshake, so certificate and CA
// reloads reach it.
func http1Only(base *tls.Config) *tls.Config {
	return &tls.Config{GetConfigForClient: func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
		c := base
		if base.GetConfigForClient != nil {
			cc, err := base.GetConfigForClient(hi)
			if err != nil {
				return nil, err
			}
			if cc != nil {
				c = cc
			}
		}
		c = c.Clone()
		c.GetConfigForClient = nil
		c.NextProtos = []string{"http/1.1"}
		return c, nil
	}}
}

func poolOf(cas []*x509.Certificate) *x509.CertPool {
	pool := x509.NewCertPool()
	for _, ca := range cas {
		pool.AddCert(ca)
	}
	return pool
}

// caFile reads a PEM CA bundle again whenever its content changes and
// applies it. A bundle that does not parse is logged and ignored: the
// CAs in force stay.
type caFile struct {
	path  string
	every time.Duration
	apply func([]*x509.Certificate)
	log   hclog.Logger
	// loaded is the digest of the bundle in force: read when the caFile is
	// made, right after the CAs were, so that a change made before Start
	// runs is not taken for the bundle in force.
	loaded []byte
}

func newCAFile(path string, every time.Duration, log hclog.Logger, apply func([]*x509.Certificate)) *caFile {
	f := &caFile{path: path, every: every, apply: apply, log: log}
	f.loaded, _ = f.sum()
	return f
}

var _ Reloader = (*caFile)(nil)

// Start polls the file until ctx ends.
func (f *caFile) Start(ctx context.Context) error {
	last := f.loaded
	tick := time.NewTicker(f.every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		sum, err := f.sum()
		if err != nil {
			f.log.Warn("cannot read CA bundle; keeping the CAs in force", "file", f.path, "error", err)
			continue
		}
		if bytes.Equal(sum, last) {
			continue
		}
		cas, err := certutil.CertsFromFile(f.path)
		if err != nil {
			f.log.Warn("CA bundle does not parse; keeping the CAs in force", "file", f.path, "error", err)
			last = sum // say it once per bad version
			continue
		}
		last = sum
		f.apply(cas)
		f.log.Info("CA bundle reloaded", "file", f.path, "cas", len(cas))
	}
}

func (f *caFile) sum() ([]byte, error) {
	b, err := os.ReadFile(f.path)
	if err != nil {
		return nil, err
	}
	s := sha256.Sum256(b)
	return s[:], nil
}
